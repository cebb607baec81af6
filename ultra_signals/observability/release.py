"""Which release made a run: the package version, and the git commit when running from a checkout.

Recorded in every run's journal row (inside its settings JSON, key ``release``, until the journal grows a column)
and in the report, so a rollback knows what it rolls back from.
"""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path

from ultra_signals import __version__


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The checkout's HEAD commit (with ``-dirty`` when the tree has changes), or None outside a checkout."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if dirty else head or None


def release() -> dict[str, str | None]:
    return {"version": __version__, "git_commit": git_commit()}


def describe() -> str:
    commit = git_commit()
    return f"ultra-signals {__version__}" + (
        f" (git {commit[:12]}{'-dirty' if commit.endswith('-dirty') else ''})" if commit else ""
    )
