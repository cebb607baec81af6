"""Settings: layering, strictness, error messages that name the source, the key and the reason; secrets."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.conftest import DEFAULTS
from ultra_signals.core.config import (
    DEFAULTS_DIR,
    STAGES,
    ConfigError,
    find_profile,
    find_settings,
    load_settings,
    redacted_dict,
)


def _tree(tmp_path: Path, base: str, profile: str = "runtime:\n  mode: shadow\n") -> Path:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "settings.yaml").write_text(base)
    (tmp_path / "profiles" / "shadow.yaml").write_text(profile)
    return tmp_path / "settings.yaml"


def test_seed_values() -> None:
    s = load_settings(environ={})
    assert s.runtime.symbols == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert s.runtime.timeframes == ["1m", "5m", "15m", "1h"]
    assert s.runtime.primary_timeframe == "5m"
    assert (s.sniper.enabled, s.sniper.mtf_confirm) == (True, True)
    assert (s.sniper.max_signals_per_hour, s.sniper.daily_signal_cap, s.sniper.cooldown_bars) == (2, 6, 10)
    assert s.runtime.source == "sim" and s.redis.enabled is False and s.notifier.sink == "console"


@pytest.mark.parametrize("profile", STAGES)
def test_every_profile_loads(profile: str) -> None:
    s = load_settings(profile, environ={})
    assert s.profile == profile
    assert s.sniper.max_signals_per_hour <= s.sniper.daily_signal_cap


def test_canary_profile_overlays_base() -> None:
    s = load_settings("canary", environ={})
    assert s.runtime.mode == "canary" and s.runtime.symbols == ["BTCUSDT"]
    assert (s.sniper.max_signals_per_hour, s.sniper.daily_signal_cap) == (1, 2)
    assert s.redis.on_failure == "block"
    assert s.sniper.cooldown_bars == 10  # untouched keys come from the base


def test_env_overrides_with_nested_delimiter() -> None:
    s = load_settings(
        environ={
            "ULTRA_SIGNALS_SNIPER__DAILY_SIGNAL_CAP": "4",
            "ULTRA_SIGNALS_REDIS__ENABLED": "true",
            "ULTRA_SIGNALS_REDIS__URL": "redis://127.0.0.1:6379/0",
            "ULTRA_SIGNALS_RUNTIME__SYMBOLS": "BTCUSDT,ETHUSDT",
        }
    )
    assert s.sniper.daily_signal_cap == 4
    assert s.redis.enabled is True and s.redis.url == "redis://127.0.0.1:6379/0"
    assert s.runtime.symbols == ["BTCUSDT", "ETHUSDT"]


def test_unknown_key_in_yaml_names_file_and_key(tmp_path: Path) -> None:
    path = _tree(tmp_path, "sniper:\n  max_signals_per_hr: 3\n")
    with pytest.raises(ConfigError) as e:
        load_settings(settings_file=path, environ={})
    assert str(path) in str(e.value) and "sniper.max_signals_per_hr" in str(e.value) and "unknown key" in str(e.value)


def test_bad_value_in_profile_names_profile_file(tmp_path: Path) -> None:
    path = _tree(tmp_path, "sniper:\n  cooldown_bars: 5\n", "sniper:\n  daily_signal_cap: -1\n")
    with pytest.raises(ConfigError) as e:
        load_settings(settings_file=path, environ={})
    msg = str(e.value)
    assert "profiles/shadow.yaml" in msg and "sniper.daily_signal_cap" in msg and "greater than or equal to 1" in msg


def test_bad_env_value_names_variable() -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(environ={"ULTRA_SIGNALS_SNIPER__DAILY_SIGNAL_CAP": "many"})
    assert "ULTRA_SIGNALS_SNIPER__DAILY_SIGNAL_CAP" in str(e.value) and "valid integer" in str(e.value)


def test_unknown_env_variable_is_an_error() -> None:
    with pytest.raises(ConfigError, match="ULTRA_SIGNALS_SNIPER__DAILY_CAP"):
        load_settings(environ={"ULTRA_SIGNALS_SNIPER__DAILY_CAP": "3"})


def test_cross_field_rules() -> None:
    with pytest.raises(ConfigError, match="exceeds daily_signal_cap"):
        load_settings(environ={"ULTRA_SIGNALS_SNIPER__MAX_SIGNALS_PER_HOUR": "9"})
    with pytest.raises(ConfigError, match="primary_timeframe"):
        load_settings(environ={"ULTRA_SIGNALS_RUNTIME__PRIMARY_TIMEFRAME": "4h"})
    with pytest.raises(ConfigError, match="unknown timeframe"):
        load_settings(environ={"ULTRA_SIGNALS_RUNTIME__TIMEFRAMES": "1m,7x"})
    with pytest.raises(ConfigError, match="upper-case"):
        load_settings(environ={"ULTRA_SIGNALS_RUNTIME__SYMBOLS": "btcusdt"})


def test_unknown_profile_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match="known profiles: canary"):
        load_settings("nope", environ={})


def test_secret_in_yaml_is_refused(tmp_path: Path) -> None:
    path = _tree(tmp_path, "telegram:\n  bot_token: '123:abc'\n")
    with pytest.raises(ConfigError, match=r"telegram\.bot_token: secrets may only come from the environment"):
        load_settings(settings_file=path, environ={})


def test_secrets_from_file_and_env_are_redacted(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.env"
    secrets.write_text("ULTRA_SIGNALS_TELEGRAM__BOT_TOKEN=123456:SECRET-token\n")
    s = load_settings(secrets_file=secrets, environ={"ULTRA_SIGNALS_BINANCE__API_KEY": "k-SECRET"})
    assert s.telegram.bot_token is not None and s.telegram.bot_token.get_secret_value() == "123456:SECRET-token"
    shown = redacted_dict(s)
    assert shown["telegram"]["bot_token"] == "***" and shown["binance"]["api_key"] == "***"
    assert "SECRET" not in repr(shown) and "SECRET" not in repr(s)


def test_invalid_secret_value_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(
            environ={"ULTRA_SIGNALS_REDIS__URL": "redis://:hunter2@127.0.0.1:6379/0", "ULTRA_SIGNALS_REDIS__PORT": "x"}
        )
    assert "hunter2" not in str(e.value)


def test_cli_overrides_win(tmp_path: Path) -> None:
    s = load_settings(overrides={"runtime.symbols": "ETHUSDT", "metrics.port": 0}, environ={})
    assert s.runtime.symbols == ["ETHUSDT"] and s.metrics.port == 0


# -- the loader is a pure function of its inputs ------------------------------------------------------------
def test_loading_changes_neither_os_environ_nor_module_state(monkeypatch: pytest.MonkeyPatch) -> None:
    import ultra_signals.core.config as config

    monkeypatch.setenv("ULTRA_SIGNALS_SNIPER__DAILY_SIGNAL_CAP", "5")
    before_env = dict(os.environ)
    before_globals = {k: repr(v) for k, v in vars(config).items() if not k.startswith("__")}
    a = load_settings(env={"ULTRA_SIGNALS_SNIPER__DAILY_SIGNAL_CAP": "3"})
    b = load_settings()  # os.environ, untouched by the call before
    c = load_settings(env={})
    assert (a.sniper.daily_signal_cap, b.sniper.daily_signal_cap, c.sniper.daily_signal_cap) == (3, 5, 6)
    assert dict(os.environ) == before_env
    assert {k: repr(v) for k, v in vars(config).items() if not k.startswith("__")} == before_globals


def test_environ_is_the_former_name_of_env() -> None:
    assert load_settings(environ={"ULTRA_SIGNALS_SNIPER__COOLDOWN_BARS": "3"}).sniper.cooldown_bars == 3


def test_profiles_on_disk_are_the_rollout_stages() -> None:
    from ultra_signals.apps import rollout

    assert rollout.STAGES is STAGES
    assert sorted(p.stem for p in (DEFAULTS / "profiles").glob("*.yaml")) == sorted(STAGES)


# -- hostile settings files: one line naming file:line and why ---------------------------------------------
def _laughs(levels: int = 9) -> str:
    out, prev = 'a: &a ["lol"]\n', "a"
    for i in range(1, levels + 1):
        name = f"l{i}"
        out += f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]\n"
        prev = name
    return out


HOSTILE_YAML = [
    (_laughs(), ":2: YAML aliases (*name) are not allowed"),
    ("x: " + "[" * 5000 + "]" * 5000 + "\n", ":1: nested deeper than"),
    ("".join("  " * i + f"k{i}:\n" for i in range(200)), ":16: nested deeper than"),
    (
        "sniper:\n  daily_signal_cap: 4\n  daily_signal_cap: 5\n",
        ":3: duplicate key 'daily_signal_cap' (first at line 2)",
    ),
    ("sniper:\n  cooldown_bars: 1\nsniper:\n  enabled: true\n", ":3: duplicate key 'sniper'"),
    ("redis:\n  timeout_ms: .inf\n", ":2: redis.timeout_ms: Input should be a finite number"),
    ("sim:\n  base_vol: .nan\n", ":2: sim.base_vol: Input should be a finite number"),
    (
        "sniper:\n  daily_signal_cap: 100000000000000000000000000000\n",
        ":2: sniper.daily_signal_cap: Input should be less",
    ),
    ("execution:\n  max_notional_usdt: 1.0e+29\n", ":2: execution.max_notional_usdt: Input should be less than"),
    ("runtime:\n  timeframes: [1m, 7m]\n", ":2: runtime.timeframes: unknown timeframe '7m'"),
    ('sniper:\n  mtf_map: {"5m": "13m"}\n', ":2: sniper.mtf_map: unknown timeframe '13m'"),
    ("sniper:\n  daily_signal_cap: [1\n", "not valid YAML"),
    ("journal:\n  url: postgresql://u:hunter2@db/x\n", ":2: journal.url: a URL with credentials is a secret"),
    ("redis:\n  url: redis://:hunter2@127.0.0.1:6379/0\n", ":2: redis.url: a URL with credentials is a secret"),
    ("- a\n- b\n", "the top level must be a mapping"),
    ("? [a, b]\n: 1\n", ":1: a key must be a plain name"),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("text", "why"), HOSTILE_YAML, ids=[w[:40] for _, w in HOSTILE_YAML])
def test_hostile_settings_file_is_one_line_naming_file_line_and_why(tmp_path: Path, text: str, why: str) -> None:
    path = _tree(tmp_path, text)
    with pytest.raises(ConfigError) as e:  # the timeout mark bounds it: the alias file alone hung > 60 s before
        load_settings(settings_file=path, env={})
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and why in msg, msg
    assert "hunter2" not in msg


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("runtime:\n  mode: shadow\n".encode("utf-16"), "looks like UTF-16"),
        ("runtime:\n  mode: shadow\n".encode("utf-16-le"), "looks like UTF-16"),
        (bytes(range(256)) * 4, "binary data"),
        (b"runtime:\n  mode: \xff\xfe shadow\n", ":2: not UTF-8 text"),
        (b"a: 1\n" * 300_000, "a settings file is at most"),
    ],
)
def test_binary_utf16_and_huge_files_are_refused(tmp_path: Path, raw: bytes, why: str) -> None:
    path = _tree(tmp_path, "")
    path.write_bytes(raw)
    with pytest.raises(ConfigError, match=re.escape(why)) as e:
        load_settings(settings_file=path, env={})
    assert "\n" not in str(e.value)


def test_a_utf8_byte_order_mark_is_fine(tmp_path: Path) -> None:
    path = _tree(tmp_path, "")
    path.write_bytes("\ufeffsniper:\n  cooldown_bars: 3\n".encode())
    assert load_settings(settings_file=path, env={}).sniper.cooldown_bars == 3


# -- environment values ------------------------------------------------------------------------------------
def test_env_lists_accept_commas_or_json() -> None:
    s = load_settings(env={"ULTRA_SIGNALS_SCORING__TARGET_R": "1,2", "ULTRA_SIGNALS_RUNTIME__SYMBOLS": '["ETHUSDT"]'})
    assert s.scoring.target_r == [1.0, 2.0] and s.runtime.symbols == ["ETHUSDT"]
    s = load_settings(env={"ULTRA_SIGNALS_SNIPER__MTF_MAP": '{"5m": "1h"}'})
    assert s.sniper.mtf_map["5m"] == "1h"


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("SNIPER__MTF_MAP", "nan", "not valid JSON"),
        ("SNIPER__MTF_MAP", "[1]", "sniper.mtf_map: Input should be a valid dictionary"),
        ("SNIPER__MTF_MAP", '{"5m": "4h", "1h": "7m"}', "unknown timeframe '7m'"),
        ("SNIPER__MTF_MAP", "[" * 100_000, "not valid JSON"),
        ("RUNTIME__SYMBOLS", '["a",', "not a valid JSON list"),
        ("RUNTIME__SYMBOLS", "[" * 100_000, "not a valid JSON list"),
        ("SCORING__TARGET_R", "1,x", "scoring.target_r.1: Input should be a valid number"),
        ("SCORING__TARGET_R", "nan", "Input should be a finite number"),
        ("SCORING__TARGET_R", "", "target_r needs at least one R multiple"),
        ("REDIS__TIMEOUT_MS", "inf", "Input should be a finite number"),
        ("REDIS__TIMEOUT_MS", "1e300", "Input should be less than or equal to 5000"),
        ("SNIPER__DAILY_SIGNAL_CAP", "1e29", "valid integer"),
        ("RUNTIME__TIMEFRAMES", "1m,5m,7m", "unknown timeframe '7m'"),
        ("SNIPER", "x", "is a section; name one of its keys"),
        ("SNIPER__MTF_MAP__5M", "15m", "unknown setting 'sniper.mtf_map.5m'"),
    ],
)
def test_bad_env_values_are_one_line_naming_the_variable(name: str, value: str, why: str) -> None:
    var = "ULTRA_SIGNALS_" + name
    with pytest.raises(ConfigError) as e:
        load_settings(env={var: value})
    msg = str(e.value)
    assert "\n" not in msg and why in msg, msg
    assert "environment variable " + var in msg


def test_a_section_rule_names_the_variables_that_broke_it_and_never_echoes_the_section() -> None:
    env = {
        "ULTRA_SIGNALS_TELEGRAM__BOT_TOKEN": "4242:SECRET-token-value",
        "ULTRA_SIGNALS_TELEGRAM__BACKOFF_INITIAL_S": "100",
        "ULTRA_SIGNALS_TELEGRAM__BACKOFF_MAX_S": "1",
    }
    with pytest.raises(ConfigError) as e:
        load_settings(env=env)
    msg = str(e.value)
    assert "SECRET" not in msg and "4242" not in msg
    assert "settings.yaml" not in msg  # the values came from the environment, not the file
    assert "ULTRA_SIGNALS_TELEGRAM__BACKOFF_INITIAL_S" in msg and "ULTRA_SIGNALS_TELEGRAM__BACKOFF_MAX_S" in msg
    assert "backoff_initial_s must not exceed backoff_max_s" in msg


def test_a_bad_secret_is_named_but_never_shown(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.env"
    secrets.write_text("ULTRA_SIGNALS_REDIS__PORT=hunter2-SECRET\n")
    with pytest.raises(ConfigError) as e:
        load_settings(secrets_file=secrets, env={"ULTRA_SIGNALS_JOURNAL__URL": "postgresql://u:pw-SECRET@h/db",
                                                "ULTRA_SIGNALS_JOURNAL__BATCH_SIZE": "pw-SECRET"})  # fmt: skip
    msg = str(e.value)
    assert f"secrets file {secrets}: ULTRA_SIGNALS_REDIS__PORT" in msg
    assert "pw-SECRET" not in msg  # a password seen in a URL is hidden wherever it reappears


def test_secrets_file_lines_are_checked(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.env"
    secrets.write_text("# comment\nexport ULTRA_SIGNALS_BINANCE__API_KEY='k-1'\nOTHER_TOOL=x\nnot a line\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(secrets))}:4: expected NAME=value"):
        load_settings(secrets_file=secrets, env={})
    secrets.write_text("export ULTRA_SIGNALS_BINANCE__API_KEY='k-1'\nOTHER_TOOL=x\n")
    s = load_settings(secrets_file=secrets, env={})
    assert s.binance.api_key is not None and s.binance.api_key.get_secret_value() == "k-1"


def test_profile_names_cannot_leave_the_profiles_folder() -> None:
    with pytest.raises(ConfigError, match="a profile is a file name"):
        load_settings("../settings", env={})


# -- mtf_map against the fed timeframes (issue 11 item 5) --------------------------------------------------
def test_a_signal_timeframe_confirmed_on_a_timeframe_not_fed_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(env={"ULTRA_SIGNALS_RUNTIME__PRIMARY_TIMEFRAME": "1h"})
    msg = str(e.value)
    assert "on 4h, which is not in runtime.timeframes" in msg and "signal timeframe 1h" in msg
    assert "environment variable ULTRA_SIGNALS_RUNTIME__PRIMARY_TIMEFRAME" in msg  # the source that broke it
    path = _tree(tmp_path, 'sniper:\n  mtf_map: {"1m": "5m"}\n')
    with pytest.raises(ConfigError, match="no confirming timeframe for signal timeframe 5m"):
        load_settings(settings_file=path, env={})
    # Feeding 4h, or not confirming, or no sniper at all: accepted.
    ok = load_settings(env={"ULTRA_SIGNALS_RUNTIME__PRIMARY_TIMEFRAME": "1h",
                            "ULTRA_SIGNALS_RUNTIME__TIMEFRAMES": "5m,1h,4h"})  # fmt: skip
    assert ok.runtime.timeframes == ["5m", "1h", "4h"]
    assert load_settings(env={"ULTRA_SIGNALS_RUNTIME__PRIMARY_TIMEFRAME": "1h",
                              "ULTRA_SIGNALS_SNIPER__MTF_CONFIRM": "false"}).sniper.mtf_confirm is False  # fmt: skip


def test_the_default_map_passes_although_1h_maps_to_4h() -> None:
    # 1h produces no signals by default, so its unused 4h entry is not an error (decisions stay unchanged).
    s = load_settings(env={})
    assert s.sniper.mtf_map["1h"] == "4h" and "4h" not in s.runtime.timeframes
    assert s.runtime.signal_timeframes == ["5m"]


def test_redis_timeout_has_an_upper_bound() -> None:
    """A Redis call can hold a decision for its whole timeout: minutes would be a stall, not a slow call."""
    import pytest as _pytest

    from ultra_signals.core.config import ConfigError as _ConfigError
    from ultra_signals.core.config import load_settings as _load

    assert _load(overrides={"redis.timeout_ms": 5000}, environ={}).redis.timeout_ms == 5000
    with _pytest.raises(_ConfigError, match=r"redis\.timeout_ms"):
        _load(overrides={"redis.timeout_ms": 60_000}, environ={})


# -- where the settings come from (README "Configuration": flag, env, ./settings.yaml, packaged defaults) -----------


def test_lookup_order_flag_then_env_then_working_directory_then_packaged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flag, by_env, cwd = tmp_path / "flag.yaml", tmp_path / "env" / "s.yaml", tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    env = {"ULTRA_SIGNALS_SETTINGS": str(by_env)}
    assert find_settings(None, {}) == (DEFAULTS_DIR / "settings.yaml", "packaged defaults")
    (cwd / "settings.yaml").write_text("sniper:\n  cooldown_bars: 2\n")
    assert find_settings(None, {}) == (cwd / "settings.yaml", "./settings.yaml in the working directory")
    assert find_settings(None, env) == (by_env, "environment variable ULTRA_SIGNALS_SETTINGS")
    assert find_settings(flag, env) == (flag, "--settings")
    # The working directory's file is what loads, with the packaged profile (there is no profiles/ beside it).
    assert load_settings(env={}).sniper.cooldown_bars == 2


def test_the_packaged_defaults_hold_every_stage_and_load_without_a_checkout_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no settings.yaml here: the packaged one is used
    for stage in STAGES:
        assert find_profile(DEFAULTS_DIR / "settings.yaml", stage) == DEFAULTS_DIR / "profiles" / f"{stage}.yaml"
        assert load_settings(stage, env={}).profile == stage


def test_a_profile_beside_the_settings_file_wins_over_the_packaged_one(tmp_path: Path) -> None:
    path = _tree(tmp_path, "sniper:\n  cooldown_bars: 2\n", profile="sniper:\n  cooldown_bars: 5\n")
    assert find_profile(path, "shadow") == tmp_path / "profiles" / "shadow.yaml"
    assert load_settings(settings_file=path, env={}).sniper.cooldown_bars == 5
    # canary is not beside it: the packaged canary profile applies over this base.
    assert find_profile(path, "canary") == DEFAULTS_DIR / "profiles" / "canary.yaml"
    assert load_settings("canary", settings_file=path, env={}).runtime.mode == "canary"


def test_portfolio_limits_load_per_profile_and_a_bad_one_names_its_key(tmp_path: Path) -> None:
    canary = load_settings("canary", environ={}).execution.portfolio
    assert (canary.max_total_notional_usdt, canary.max_same_direction_positions) == (500.0, 1)
    assert load_settings("shadow", environ={}).execution.portfolio.max_margin_usage == 0.5  # settings.yaml's default
    path = _tree(tmp_path, "sniper:\n  cooldown_bars: 5\n", "execution:\n  portfolio:\n    max_margin_usage: 1.5\n")
    with pytest.raises(ConfigError) as e:
        load_settings(settings_file=path, environ={})
    msg = str(e.value)
    assert (
        "profiles/shadow.yaml" in msg and "execution.portfolio.max_margin_usage" in msg and "less than or equal" in msg
    )
    with pytest.raises(ConfigError, match="ULTRA_SIGNALS_EXECUTION__PORTFOLIO__MAX_SAME_DIRECTION_POSITIONS"):
        load_settings(environ={"ULTRA_SIGNALS_EXECUTION__PORTFOLIO__MAX_SAME_DIRECTION_POSITIONS": "0"})
