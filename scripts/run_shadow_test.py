#!/usr/bin/env python
"""``python scripts/run_shadow_test.py [OPTIONS]`` is ``ultra-signals shadow --speed 1 [OPTIONS]``.

Kept because operators know this name, and paced in real time by default: ``--duration 120`` lasts 120 minutes
of wall time, as the seed's two-terminal workflow expects (``monitor_shadow.py --duration 120`` beside it).
``--speed N`` goes N times faster.  Every other option passes through.  Works from a fresh checkout without installing the package: when
``ultra_signals`` is not importable, the checkout this script lives in is put on ``sys.path``.
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
    from ultra_signals.apps.cli import app

    args = sys.argv[1:]
    paced = (
        [] if any(a == "--speed" or a.startswith("--speed=") for a in args) or "--help" in args else ["--speed", "1"]
    )
    app(args=["shadow", *paced, *args], prog_name="run_shadow_test.py")


if __name__ == "__main__":
    main()
