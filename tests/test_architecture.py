"""The package layout reads as the data path, and stays that way: every import between rooms goes downwards.

Parses every module of the package (imports inside functions and under ``TYPE_CHECKING`` count: a lazy import is
still a dependency) and checks the rooms' dependency rules of ``docs/architecture.md``. A room is a top-level
package (``engine``, ``execution`` …) or a top-level module (``bootstrap``). A new import that breaks a rule, or
one that closes a cycle between rooms, fails here with the file and line.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ultra_signals"

# What each room may import (besides itself). Pure rooms first; then adapters; then the composition root and edges.
_EDGES = {"core", "observability", "features", "engine", "counters", "journal", "venues", "sources", "transport"}
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "observability": {"core"},
    "features": {"core"},
    "engine": {"core", "features"},
    "counters": {"core", "observability"},
    "journal": {"core"},
    "venues": {"core", "observability"},
    "sources": {"core", "features", "observability", "venues"},
    "transport": {"core", "observability", "journal", "control"},
    "execution": {"core", "observability", "journal", "venues"},
    "control": {"core", "observability", "journal", "execution"},
    "live": {"core", "observability", "engine", "counters", "journal", "sources", "execution", "transport", "control"},
    "web": {"core", "observability", "journal", "control"},
    # Offline evaluation: labels and selection replays with the live engine's own code (pure, no I/O).
    "research": {"core", "features", "engine", "counters"},
    "bootstrap": _EDGES | {"execution", "control", "live", "web"},
    "apps": _EDGES | {"execution", "control", "live", "web", "bootstrap", "research"},
    "__main__": {"apps"},
    "__init__": set(),
}
PURE = {"core", "features", "engine", "research"}
IO_MODULES = {"socket", "sqlalchemy", "redis", "httpx", "websockets", "aiohttp", "requests", "urllib.request"}


def room_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def imports(path: Path, located: Path | None = None) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in the file, relative ones resolved as if the file were at
    ``located`` (default: where it is, inside the package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    pkg = ["ultra_signals", *(located or path).relative_to(PACKAGE).parent.parts]
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
    return out


def room_edges() -> dict[tuple[str, str], list[str]]:
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        src = room_of(path)
        for line, mod in imports(path):
            parts = mod.split(".")
            if parts[0] != "ultra_signals" or len(parts) < 2:
                continue
            dst = parts[1]
            if dst != src:
                edges[(src, dst)].append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {mod}")
    return edges


def test_every_room_is_known() -> None:
    rooms = {room_of(p) for p in PACKAGE.rglob("*.py")}
    assert rooms <= set(ALLOWED), f"rooms without a rule in ALLOWED: {sorted(rooms - set(ALLOWED))}"


def test_imports_follow_the_dependency_rules() -> None:
    bad = [
        f"{src} → {dst}: {where[0]}" for (src, dst), where in sorted(room_edges().items()) if dst not in ALLOWED[src]
    ]
    assert not bad, "imports against the layout:\n" + "\n".join(bad)


def test_no_cycle_between_rooms() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for src, dst in room_edges():
        graph[src].add(dst)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return [*stack[stack.index(m) :], m]
            if m not in state and (cycle := visit(m)):
                return cycle
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (cycle := visit(n)):
            raise AssertionError("package-level import cycle: " + " → ".join(cycle))


def test_pure_rooms_do_no_io() -> None:
    """features, engine and core's logic import no network or database client (core.config reads files only)."""
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if room_of(path) not in PURE:
            continue
        for line, mod in imports(path):
            if mod.split(".")[0] in IO_MODULES or mod in IO_MODULES:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {mod}")
    assert not bad, "I/O in a pure room:\n" + "\n".join(bad)


def test_the_parser_sees_relative_and_function_level_imports(tmp_path: Path) -> None:
    """The rules above are not vacuous: lazy and relative imports are seen and resolved."""
    f = tmp_path / "mod.py"
    f.write_text("def f():\n    from .x import y\n    import ultra_signals.live.runner\n", encoding="utf-8")
    found = {m for _, m in imports(f, located=PACKAGE / "engine" / "mod.py")}
    assert found == {"ultra_signals.engine.x", "ultra_signals.live.runner"}
