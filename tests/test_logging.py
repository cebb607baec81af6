"""Logging configured once: JSON lines on request, levels from settings and -v, every record scrubbed."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from ultra_signals.observability import logging as obs


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    obs.unconfigure()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_one_object_per_record_with_secrets_scrubbed(capsys: pytest.CaptureFixture[str]) -> None:
    obs.configure_logging(fmt="json", secrets=["bot-S3CRET-token"])
    log = logging.getLogger("ultra_signals.tests")
    log.info("filled %d bar(s) from REST", 4)
    log.warning("token %s and https://api.telegram.org/bot1:abc/getUpdates", "bot-S3CRET-token")
    try:
        raise ValueError("redis://:pw-S3CRET@h/0 refused")
    except ValueError:
        log.exception("counter backend lost")
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["level"] for r in records] == ["INFO", "WARNING", "ERROR"]
    assert records[0]["msg"] == "filled 4 bar(s) from REST" and records[0]["logger"] == "ultra_signals.tests"
    assert "S3CRET" not in err and "bot1:abc" not in err
    assert "ValueError" in records[2]["exc"]


def test_levels_from_settings_and_verbose(capsys: pytest.CaptureFixture[str]) -> None:
    obs.configure_logging(fmt="text")
    obs.apply_settings("WARNING", "auto", [])
    log = logging.getLogger("ultra_signals.tests")
    log.info("hidden")
    log.warning("shown")
    assert "hidden" not in capsys.readouterr().err
    obs.configure_logging(fmt="text", verbose=1)
    log.debug("debug shown")
    logging.getLogger("httpx").info("library request line")
    err = capsys.readouterr().err
    assert "debug shown" in err and "library request line" not in err  # libraries stay quiet below -vv
    obs.configure_logging(fmt="text", verbose=2)
    logging.getLogger("httpx").debug("library debug")
    assert "library debug" in capsys.readouterr().err


def test_a_second_configuration_replaces_the_handler() -> None:
    root = logging.getLogger()
    n = len(root.handlers)
    obs.configure_logging(fmt="text")
    obs.configure_logging(fmt="json")
    assert len(root.handlers) == n + 1 and obs.json_logging()


def test_settings_format_applies_unless_the_command_line_chose(capsys: pytest.CaptureFixture[str]) -> None:
    obs.configure_logging()
    obs.apply_settings("INFO", "json", [])
    assert obs.json_logging()
    obs.unconfigure()
    obs.configure_logging(fmt="text")
    obs.apply_settings("INFO", "json", [])
    assert not obs.json_logging()
