"""Settings: layering, strictness, error messages that name the source, the key and the reason; secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from ultra_signals.core.config import STAGES, ConfigError, load_settings, redacted_dict


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
