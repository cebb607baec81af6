"""Fuzz of everything an operator feeds in: candle files, settings files and ``ULTRA_SIGNALS_*`` values.

Every input is either accepted (and then what was accepted is sane) or refused with one line naming the file and
line, or the variable, and why -- never another exception, never a hang.  Hypothesis runs bounded numbers of
examples; the ``timeout`` marks and the subprocess timeouts bound the time (a hang fails, no timing is asserted).
A handful of cases go through the real command line in a subprocess to show the operator sees one line, exit 2.
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from tests.helpers import run_cli
from ultra_signals.core.config import ENV_PREFIX, ConfigError, Settings, load_settings
from ultra_signals.sources.base import SourceError
from ultra_signals.sources.candles_csv import read_candles

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,  # the same examples on every run: a failure here is reproducible, not flaky
)

# -- candle files -------------------------------------------------------------------------------------------
T0 = 1_636_934_400_000  # a 5m boundary
GOOD = (T0, 1.2, 1.3, 1.1, 1.25, 5.0)

tricky_numbers = st.sampled_from(
    ["0", "-0", "-1.2", "nan", "NaN", "inf", "-inf", "1e400", "1e-400", "", " ", "abc", "1,2", "0x10", "1.2.3", "１"]
)
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=0.5, max_value=2.0).map(repr),
    tricky_numbers,
)


@st.composite
def candle_rows(draw: st.DrawFn) -> list[str]:
    """A short file: mostly valid bars with some fields, rows or whole lines replaced by hostile text."""
    n = draw(st.integers(1, 12))
    rows = []
    for i in range(n):
        ot, o, h, lo, c, v = GOOD[0] + i * 300_000, *GOOD[1:]
        fields = [str(ot), repr(o), repr(h), repr(lo), repr(c), repr(v)]
        mutation = draw(st.sampled_from(["none", "none", "field", "swap", "line", "columns"]))
        if mutation == "field":
            fields[draw(st.integers(0, 5))] = draw(numbers)
        elif mutation == "swap":
            fields[2], fields[3] = fields[3], fields[2]
        elif mutation == "columns":
            fields = fields[: draw(st.integers(0, 5))] + draw(st.lists(numbers, max_size=8))
        line = ",".join(fields)
        if mutation == "line":
            line = draw(st.text(max_size=40).filter(lambda t: "\n" not in t and "\r" not in t))
        rows.append(line)
    return rows


@pytest.mark.timeout(120)
@FUZZ
@given(rows=candle_rows(), header=st.booleans())
def test_any_candle_file_is_read_sanely_or_refused_with_file_and_line(
    tmp_path: Path, rows: list[str], header: bool
) -> None:
    path = tmp_path / "XRPUSDT-5m.csv"
    path.write_text(("open_time,open,high,low,close,volume\n" if header else "") + "\n".join(rows) + "\n")
    try:
        bars = read_candles(path, "XRPUSDT", "5m")
    except SourceError as e:
        msg = str(e)
        assert "\n" not in msg and msg.startswith(str(path)), msg
        return
    for b in bars:  # what is accepted can feed the indicators
        values = (b.open, b.high, b.low, b.close, b.volume)
        assert all(math.isfinite(x) for x in values)
        assert 0 < b.low <= min(b.open, b.close) <= max(b.open, b.close) <= b.high and b.volume >= 0


@pytest.mark.timeout(60)
@FUZZ
@given(raw=st.binary(max_size=400))
def test_random_bytes_as_a_candle_file(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "XRPUSDT-5m.csv"
    path.write_bytes(raw)
    try:
        read_candles(path, "XRPUSDT", "5m")
    except SourceError as e:
        assert "\n" not in str(e) and str(path) in str(e)


# -- settings files ------------------------------------------------------------------------------------------
def _leaves(model: type[BaseModel] = Settings, prefix: str = "") -> list[str]:
    out = []
    for name, f in model.model_fields.items():
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += _leaves(ann, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


LEAVES = _leaves()
yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["7m", "1h", "5m", "4h", "BTCUSDT", "redis://:pw-FUZZ@h/0", "postgresql://u:pw-FUZZ@h/db"]),
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def settings_documents(draw: st.DrawFn) -> str:
    """Either a mapping of real keys to hostile values, or hostile YAML text (aliases, nesting, junk)."""
    kind = draw(st.sampled_from(["keys", "keys", "keys", "text", "aliases", "nesting"]))
    if kind == "text":
        return draw(st.text(max_size=200))
    if kind == "aliases":
        depth = draw(st.integers(1, 12))
        doc = 'a0: &a0 ["x"]\n'
        for i in range(1, depth):
            doc += f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n"
        return doc
    if kind == "nesting":
        depth = draw(st.integers(10, 3000))
        return "x: " + "[" * depth + "]" * depth + "\n" if draw(st.booleans()) else "x: " + "{a: " * depth + "}" * depth
    doc: dict[str, Any] = {}
    for key in draw(st.lists(st.sampled_from(LEAVES), min_size=1, max_size=5)):
        node = doc
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = draw(yaml_values)
    text = yaml.safe_dump(doc, allow_unicode=True)
    if draw(st.booleans()):  # repeat one line: a duplicate key, or an indentation error
        lines = text.splitlines()
        i = draw(st.integers(0, len(lines) - 1))
        lines.insert(i, lines[i])
        text = "\n".join(lines) + "\n"
    return text


def _tree(tmp_path: Path) -> Path:
    (tmp_path / "profiles").mkdir(exist_ok=True)
    (tmp_path / "profiles" / "shadow.yaml").write_text("runtime:\n  mode: shadow\n")
    return tmp_path / "settings.yaml"


def _accepted_or_one_line(call: Any, *must_name: str) -> Settings | None:
    try:
        return call()  # type: ignore[no-any-return]
    except ConfigError as e:
        msg = str(e)
        assert "\n" not in msg, msg
        assert any(n in msg for n in must_name), msg
        assert "pw-FUZZ" not in msg, msg
        return None


@pytest.mark.timeout(180)
@FUZZ
@given(doc=settings_documents())
def test_any_settings_file_is_accepted_or_refused_in_one_line(tmp_path: Path, doc: str) -> None:
    path = _tree(tmp_path)
    path.write_text(doc, encoding="utf-8")
    s = _accepted_or_one_line(lambda: load_settings(settings_file=path, env={}), str(path), "defaults")
    if s is not None:  # accepted: the invariants the rest of the code relies on hold
        assert s.sniper.max_signals_per_hour <= s.sniper.daily_signal_cap
        assert s.runtime.primary_timeframe in s.runtime.timeframes


@pytest.mark.timeout(60)
@FUZZ
@given(raw=st.binary(max_size=300))
def test_random_bytes_as_a_settings_file(tmp_path: Path, raw: bytes) -> None:
    path = _tree(tmp_path)
    path.write_bytes(raw)
    _accepted_or_one_line(lambda: load_settings(settings_file=path, env={}), str(path), "defaults")


# -- environment values -------------------------------------------------------------------------------------
env_values = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["1,2", "nan", "inf", "-1", "1e29", '["a",', "[]", "{}", '{"5m": "7m"}', "[" * 5000, "7m", "true"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
).filter(lambda v: "\x00" not in v)  # the OS refuses NUL in an environment value


@pytest.mark.timeout(300)
@settings(FUZZ, max_examples=400)  # the measurement: 21 % of 400 generated values ended in a traceback
@given(key=st.sampled_from(LEAVES), value=env_values)
def test_any_env_value_is_accepted_or_refused_naming_the_variable(key: str, value: str) -> None:
    name = ENV_PREFIX + key.upper().replace(".", "__")
    _accepted_or_one_line(lambda: load_settings(env={name: value}), name)


@pytest.mark.timeout(60)
@FUZZ
@given(suffix=st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789", min_size=1, max_size=30))
def test_unknown_variables_with_our_prefix_are_refused(suffix: str) -> None:
    name = ENV_PREFIX + suffix
    _accepted_or_one_line(lambda: load_settings(env={name: "1"}), name)


# -- the command line, as an operator sees it --------------------------------------------------------------
def _cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # The timeout bounds each case: a hang raises TimeoutExpired and fails the test.
    return run_cli(tmp_path, *args, env=env, columns=80, timeout=60)


CLI_ENV_CASES = [
    {"ULTRA_SIGNALS_SCORING__TARGET_R": "1,x"},
    {"ULTRA_SIGNALS_SNIPER__MTF_MAP": "nan"},
    {"ULTRA_SIGNALS_RUNTIME__SYMBOLS": '["a",'},
    {"ULTRA_SIGNALS_REDIS__TIMEOUT_MS": "inf"},
    {"ULTRA_SIGNALS_TEST_DATA": "/tmp"},  # the suite's old variable name: the application owns the prefix
]


@pytest.mark.parametrize("env", CLI_ENV_CASES, ids=[next(iter(e)) for e in CLI_ENV_CASES])
def test_cli_refuses_bad_env_in_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    p = _cli(tmp_path, "config", "show", env=env)
    assert p.returncode == 2 and p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and next(iter(env)) in lines[0], p.stderr


@pytest.mark.parametrize(
    "doc",
    [
        'a: &a ["x"]\n'
        + "".join(f"b{i}: &b{i} [{', '.join(['*a' if i == 0 else f'*b{i - 1}'] * 9)}]\n" for i in range(9)),
        "x: " + "[" * 5000 + "]" * 5000 + "\n",
        "sniper:\n  daily_signal_cap: 4\n  daily_signal_cap: 5\n",
        "runtime:\n  timeframes: [1m, 7m]\n",
    ],
    ids=["billion-laughs", "nesting-5000", "duplicate-key", "timeframe-7m"],
)
def test_cli_refuses_a_hostile_settings_file_in_one_line(tmp_path: Path, doc: str) -> None:
    (tmp_path / "settings.yaml").write_text(doc)
    p = _cli(tmp_path, "config", "show")
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "settings.yaml:" in lines[0] and "Traceback" not in p.stderr, p.stderr


def test_cli_refuses_a_bad_candle_file_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rows = [f"{T0 + i * 300_000},1.2,1.3,1.1,1.25,5" for i in range(30)]
    rows[20] = f"{T0 + 20 * 300_000},1.2,1.3,1.1,1.4,5"  # close above high
    (data / "XRPUSDT-5m.csv").write_text("open_time,open,high,low,close,volume\n" + "\n".join(rows) + "\n")
    p = _cli(tmp_path, "replay", "--data", str(data), "--timeframes", "5m,15m", "--no-report")
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert lines == [f"error: {data / 'XRPUSDT-5m.csv'}:22: open 1.2 / close 1.4 outside [low 1.1, high 1.3]"]


def test_cli_busy_metrics_port_is_one_line_exit_2(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = _cli(tmp_path, "shadow", "--duration", "5", "--no-report", "--metrics-port", str(port),
                 "--journal", f"sqlite:///{tmp_path}/j.db")  # fmt: skip
    assert p.returncode == 2
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]  # INFO log lines may precede it
    assert len(errors) == 1 and f"metrics.port {port}" in errors[0] and "already in use" in errors[0], p.stderr
    assert "Traceback" not in p.stderr
