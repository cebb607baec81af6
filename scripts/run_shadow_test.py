#!/usr/bin/env python
"""``python scripts/run_shadow_test.py [OPTIONS]`` is ``ultra-signals shadow [OPTIONS]``: every option passes through.

Kept because operators know this name.  Works from a fresh checkout without installing the package: when
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

    app(args=["shadow", *sys.argv[1:]], prog_name="run_shadow_test.py")


if __name__ == "__main__":
    main()
