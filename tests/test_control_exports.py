"""``ultra_signals.control``'s lazy exports: every public name resolves to its module's object, loading only that.

Why: the package exports its names on first use (PEP 562) so that a command asking for the status does not load the
kill switch's brokers; a name missing from the table, or pointing at the wrong module, would only fail when an
adapter first asked for it.
"""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import ultra_signals.control as control
from tests.conftest import REPO


@pytest.mark.parametrize("name", control.__all__)
def test_every_exported_name_is_its_modules_object(name: str) -> None:
    module = importlib.import_module(f"ultra_signals.control.{control._EXPORTS[name]}")
    assert getattr(control, name) is getattr(module, name)


def test_the_table_and_all_name_the_same_exports() -> None:
    assert sorted(control._EXPORTS) == sorted(control.__all__)
    assert set(control.__all__) <= set(dir(control))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = control.Nope
    with pytest.raises(ImportError):
        exec("from ultra_signals.control import Nope", {})


def test_importing_one_name_loads_only_its_module() -> None:
    code = (
        "import sys\n"
        "from ultra_signals.control import ControlError\n"
        "print(sorted(m for m in sys.modules if m.startswith('ultra_signals.control')))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "['ultra_signals.control', 'ultra_signals.control.model']"
