"""The counters' Redis scripts, each with the shared Lua prelude in front.

Redis scripts cannot import one another, so the helpers ``budget.lua`` and ``reserve.lua`` both need (foreign-value
errors, number parsing, integer formatting) live once in ``prelude.lua`` and are concatenated here at load time.
"""

from __future__ import annotations

from importlib.resources import files

PRELUDE = "prelude.lua"


def load_script(name: str) -> str:
    """``prelude.lua`` followed by the script ``name`` (a file of this package): the text Redis runs."""
    here = files("ultra_signals.counters")
    return here.joinpath(PRELUDE).read_text(encoding="utf-8") + here.joinpath(name).read_text(encoding="utf-8")
