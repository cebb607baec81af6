#!/usr/bin/env python
"""``python scripts/monitor_shadow.py --duration 120 --interval 30``: live table of a running shadow run.

Run it in a second terminal beside ``ultra-signals shadow``; it reads only the run's ``/metrics`` (``--url``,
default from settings ``metrics.host``/``metrics.port``).  Works from a fresh checkout without installing the
package: when ``ultra_signals`` is not importable, the checkout this script lives in is put on ``sys.path``.
"""

from __future__ import annotations

import sys
from pathlib import Path


def _ensure_importable() -> None:
    try:
        import ultra_signals  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    _ensure_importable()
    from ultra_signals.apps.monitor import cli

    cli(sys.argv[1:], prog_name="monitor_shadow.py")


if __name__ == "__main__":
    main()
