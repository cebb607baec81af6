"""Shared fixtures: the recorded market data folder, the machine's Redis, free ports.

Tests that need ``../shared/data`` skip with a reason where it is absent, but fail under CI (``CI=true``),
where it must be present.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[1]
#: The packaged default settings and profiles (``settings.yaml`` and ``profiles/``), shipped inside the wheel.
DEFAULTS = REPO / "ultra_signals" / "defaults"
# Variables of the test suite use the TEST_ULTRA_SIGNALS_ prefix: ULTRA_SIGNALS_* belongs to the application,
# whose strict settings check refuses any name there that is not a setting.
DATA_DIR = Path(os.environ.get("TEST_ULTRA_SIGNALS_DATA", REPO.parent / "shared" / "data"))
REDIS_URL = os.environ.get("TEST_ULTRA_SIGNALS_REDIS", "redis://127.0.0.1:6379/0")
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
CHROMIUM = Path(os.environ.get("TEST_ULTRA_SIGNALS_CHROMIUM", "/usr/bin/chromium"))


def skip_or_fail_under_ci(msg: str, under_ci: str) -> NoReturn:
    """Skip with ``msg``; under CI (``CI=true``) fail instead, adding ``under_ci``: there it must be present."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{msg}; {under_ci}")
    pytest.skip(msg)


def pg_unavailable() -> str | None:
    """Why the machine's PostgreSQL (``PG_URL``) cannot be used, or None when it answers."""
    from ultra_signals.journal.db import make_engine

    try:
        eng = make_engine(PG_URL)
        with eng.connect() as c:
            c.exec_driver_sql("select 1")
        eng.dispose()
    except Exception as e:
        return str(e)
    return None


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A journal URL on the machine's PostgreSQL in a schema of this test's own (``search_path``), dropped after.

    Tests running in parallel (or several helpers' suites on one machine) then never see each other's tables.
    """
    from sqlalchemy import create_engine, text

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    try:
        with admin.begin() as c:
            c.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as e:
        admin.dispose()
        skip_or_fail_under_ci(f"no PostgreSQL answers at {PG_URL}", f"under CI it must answer ({e})")
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as c:
            c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def require_data(*parts: str) -> Path:
    """Path into the shared data folder; skip (or fail under CI) if it is missing."""
    path = DATA_DIR.joinpath(*parts)
    if not path.exists():
        msg = f"recorded market data not found at {path} (expected ../shared/data beside the checkout)"
        skip_or_fail_under_ci(msg, "under CI the data folder must be present")
    return path


@pytest.fixture(autouse=True)
def _logging_unconfigured() -> Iterator[None]:
    """A command run in-process (typer's CliRunner) configures logging for the process: undo it after each test."""
    yield
    from ultra_signals.observability.logging import unconfigure

    unconfigure()


@pytest.fixture
def chromium() -> Path:
    """Debian's Chromium, for the tests that look at a page or picture in a real browser (Playwright drives it)."""
    if not CHROMIUM.exists():
        skip_or_fail_under_ci(
            f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)", "scripts/test_services.sh installs it"
        )
    return CHROMIUM


@pytest.fixture
def data_dir() -> Path:
    return require_data()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_url() -> str:
    """The machine's shared Redis on 127.0.0.1:6379 (``.ci/run`` starts one if none answers)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError as e:
        pytest.fail(f"no Redis answers at {REDIS_URL}: {e} (start one: redis-server --daemonize yes --save '')")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    """A fresh key namespace per test; its keys are deleted afterwards."""
    import redis

    ns = f"test-{uuid.uuid4().hex[:12]}"
    yield ns
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"ultra_signals:{{{ns}*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture(autouse=True)
def _no_binance_ip_ban_left_over() -> Iterator[None]:
    """A 418 a test provokes bans its fake's host for the whole process (the ban is the IP's, shared by every
    Binance client: ``venues/binance/limits.py``); each test starts and ends without one."""
    from ultra_signals.venues.binance.limits import reset_bans

    reset_bans()
    yield
    reset_bans()
