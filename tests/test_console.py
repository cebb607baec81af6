"""The CLI's lazily made rich consoles (:mod:`ultra_signals.apps.console`).

Why: commands that print plain lines must not pay for rich; the ones that do use it (progress bars, tables) must
not notice the stand-in, including when it is handed to rich itself (``Progress``/``Live`` enter it as a context
manager and write to it from their own code).
"""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.progress import Progress

from ultra_signals.apps.console import _LazyConsole, full_width, lazy_console


def _counting() -> tuple[_LazyConsole, io.StringIO, list[int]]:
    buf = io.StringIO()
    made: list[int] = []

    def make() -> Console:
        made.append(1)
        return Console(file=buf, width=60, highlight=False, force_terminal=False)

    return _LazyConsole(make), buf, made


def test_the_console_is_made_on_first_use_once() -> None:
    c, buf, made = _counting()
    assert made == []
    c.print("hello")
    c.print("again")
    assert made == [1]
    assert buf.getvalue() == "hello\nagain\n"


def test_attribute_writes_and_with_reach_the_real_console() -> None:
    c, buf, _ = _counting()
    c.quiet = True
    c.print("hidden")
    assert buf.getvalue() == ""
    c.quiet = False
    with c:  # rich's buffer context: output is held until the outermost exit
        c.print("held")
        assert buf.getvalue() == ""
    assert buf.getvalue() == "held\n"
    assert repr(c).startswith("<console width=60")


def test_rich_progress_accepts_the_stand_in() -> None:
    c, buf, _ = _counting()
    with Progress(console=c, transient=False, auto_refresh=False) as progress:  # type: ignore[arg-type]
        task = progress.add_task("market time", total=10)
        progress.update(task, completed=10)
        progress.refresh()
    assert "market time" in buf.getvalue()


@pytest.mark.parametrize(("columns", "tty", "want"), [("", False, 200), ("", True, None), ("90", False, None)])
def test_piped_tables_are_full_width_unless_columns_or_a_terminal(
    monkeypatch: pytest.MonkeyPatch, columns: str, tty: bool, want: int | None
) -> None:
    class Stream(io.StringIO):
        def isatty(self) -> bool:
            return tty

    monkeypatch.setenv("COLUMNS", columns) if columns else monkeypatch.delenv("COLUMNS", raising=False)
    assert full_width(Stream()) == want


def test_lazy_console_writes_to_the_stream_of_its_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.delenv("COLUMNS", raising=False)
    o, e = lazy_console(), lazy_console(stderr=True)
    o.print("to stdout")
    e.print("to stderr")
    assert out.getvalue() == "to stdout\n" and err.getvalue() == "to stderr\n"
    assert o.width == 200  # piped, no COLUMNS: full width (rich would cut at 80)
