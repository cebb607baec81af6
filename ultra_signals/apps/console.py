"""The command line's rich consoles, made on first use.

Why: ``import rich.console`` and building a :class:`~rich.console.Console` cost about 25 ms of CPU on the 2-core
test machine, and most answers (``status``, ``caps``, ``config show``…) are plain ``typer.echo`` lines that never
touch rich.  The CLI modules still write ``console.print(...)`` as before; the console behind it (and rich) is
made the first time one of its attributes is read, from the stream it will write to as it is then.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from rich.console import Console


def full_width(stream: Any) -> int | None:
    """Full-width tables when piped (rich would cut them at 80 columns); the terminal's width otherwise."""
    isatty = getattr(stream, "isatty", None)
    if os.environ.get("COLUMNS") or (callable(isatty) and isatty()):
        return None
    return 200


class _LazyConsole:
    """Stands in for a Console until first use, then forwards to it.

    Handed to rich itself (a progress bar, ``Live``) or to a notifier, it behaves as the console does: attribute
    reads and writes and ``with console:`` (rich's render lock) are forwarded; only ``isinstance(x, Console)`` tells
    them apart, and nothing here relies on it.
    """

    __slots__ = ("_console", "_make")

    def __init__(self, make: Callable[[], Console]) -> None:
        object.__setattr__(self, "_make", make)
        object.__setattr__(self, "_console", None)

    def _real(self) -> Console:
        console: Console | None = object.__getattribute__(self, "_console")
        if console is None:
            console = object.__getattribute__(self, "_make")()
            object.__setattr__(self, "_console", console)
        return console

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._real(), name, value)

    def __enter__(self) -> Console:
        return self._real().__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._real().__exit__(*exc)

    def __repr__(self) -> str:
        return repr(self._real())


def lazy_console(*, stderr: bool = False, fit_pipe: bool = True) -> Console:
    """A console on stdout (or stderr) without syntax highlighting, made when first used.

    ``fit_pipe``: when the stream is not a terminal and ``COLUMNS`` is unset, tables are 200 columns wide instead of
    rich's 80, so piped output is not cut (:func:`full_width`).
    """

    def make() -> Console:
        from rich.console import Console

        width = full_width(sys.stderr if stderr else sys.stdout) if fit_pipe else None
        return Console(stderr=stderr, highlight=False, width=width)

    return cast("Console", _LazyConsole(make))
