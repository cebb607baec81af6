"""No secret in any output: a bot token, a Binance key and secret, a Redis password and a PostgreSQL password.

Real parts: a private ``redis-server`` with ``requirepass`` (the password travels in ``redis.url``), the machine's
PostgreSQL (trust auth accepts any password, so the journal URL carries one that is really sent) in a database of
this test's own, and the local fake Bot API (the token is in every request path).  The commands run as an
operator runs them (subprocesses, verbose JSON and text logs); then every byte they printed, every report file,
the decisions file and every row of every journal table are searched for each secret, plain and percent-encoded.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import MetaData, create_engine, select, text

from tests.conftest import PG_URL, pg_unavailable, skip_or_fail_under_ci
from tests.fakes.telegram_server import FakeBotApi
from tests.helpers import run_cli
from tests.redis_proc import RedisProc

pytestmark = pytest.mark.timeout(600)

BOT_TOKEN = "424242:SECRET-bot-token_abcdefghijklmnop"
BINANCE_KEY = "SECRETbinancekey0123456789"
BINANCE_SECRET = "SECRETbinancesecret9876543210"
REDIS_PW = "SECRET-redis-pw-7788"
PG_PW = "SECRET-pg-pw-5566"
WEB_READ = "SECRET-web-read-token-1122"
WEB_WRITE = "SECRET-web-write-token-3344"
SECRETS = (BOT_TOKEN, BINANCE_KEY, BINANCE_SECRET, REDIS_PW, PG_PW, WEB_READ, WEB_WRITE)


def _forms(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), secret.replace(":", "%3A")}


def _leaks(where: str, text: str) -> list[str]:
    return [f"{where}: {s[:12]}…" for s in SECRETS for form in _forms(s) if form in text]


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A database of this test's own (the journal gets paused and resumed: other tests must not see that)."""
    why = pg_unavailable()
    if why is not None:
        skip_or_fail_under_ci(f"PostgreSQL not available: {why}", "under CI PostgreSQL must be running")
    name = f"secrets_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield name
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def redis_with_password() -> Iterator[RedisProc]:
    server = RedisProc(None, "--requirepass", REDIS_PW)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_no_secret_in_any_output_log_report_decisions_or_journal_row(
    tmp_path: Path, pg_database: str, redis_with_password: RedisProc
) -> None:
    journal_url = f"postgresql+psycopg://postgres:{PG_PW}@127.0.0.1:5432/{pg_database}"
    redis_url = f"redis://:{REDIS_PW}@127.0.0.1:{redis_with_password.port}/0"
    secrets_file = tmp_path / "secrets.env"
    secrets_file.write_text(
        f"ULTRA_SIGNALS_BINANCE__API_KEY={BINANCE_KEY}\nULTRA_SIGNALS_BINANCE__API_SECRET='{BINANCE_SECRET}'\n"
        f"ULTRA_SIGNALS_WEB__READ_TOKEN={WEB_READ}\nULTRA_SIGNALS_WEB__WRITE_TOKEN={WEB_WRITE}\n"
    )
    outputs: list[tuple[str, str]] = []

    def run(*args: str, env: dict[str, str] | None = None, expect: int | None = 0) -> subprocess.CompletedProcess[str]:
        p = run_cli(
            tmp_path,
            *args,
            env={
                "ULTRA_SIGNALS_SECRETS_FILE": str(secrets_file),
                "ULTRA_SIGNALS_JOURNAL__URL": journal_url,
                "ULTRA_SIGNALS_REDIS__ENABLED": "true",
                "ULTRA_SIGNALS_REDIS__URL": redis_url,
                "ULTRA_SIGNALS_REDIS__TIMEOUT_MS": "2000",
                "ULTRA_SIGNALS_NOTIFIER__SINK": "telegram",
                "ULTRA_SIGNALS_TELEGRAM__API_URL": api.url,
                "ULTRA_SIGNALS_TELEGRAM__BOT_TOKEN": BOT_TOKEN,
                "ULTRA_SIGNALS_TELEGRAM__CHAT_IDS": "4242",
                "ULTRA_SIGNALS_TELEGRAM__ALLOWED_CHAT_IDS": "4242",
                "ULTRA_SIGNALS_TELEGRAM__SEND_TIMEOUT_S": "1",
                "ULTRA_SIGNALS_TELEGRAM__BACKOFF_INITIAL_S": "0.05",
                "ULTRA_SIGNALS_TELEGRAM__BACKOFF_MAX_S": "0.2",
                "ULTRA_SIGNALS_TELEGRAM__DRAIN_TIMEOUT_S": "1",
                **(env or {}),
            },
        )
        outputs.append((" ".join(args), p.stdout + "\n" + p.stderr))
        if expect is not None:
            assert p.returncode == expect, f"{args}: exit {p.returncode}\n{p.stderr[-2000:]}"
        return p

    decisions = tmp_path / "decisions.jsonl"
    with FakeBotApi(token=BOT_TOKEN) as api:
        # A shadow run with every secret in play, logs as JSON lines at debug level for libraries too (-vv).
        # 60 minutes cannot exercise the daily cap: the report says NO-GO and the exit status is 1 (not a crash).
        run("--log-format", "json", "-vv", "shadow", "--duration", "60", "--metrics-port", "0", "--web-port", "0",
            "--decisions-out", str(decisions), expect=1)  # fmt: skip
        assert "web UI: http://127.0.0.1:" in outputs[-1][1], "the status page (with both tokens) was served"
        assert api.wait_until(lambda: len(api.delivered) > 0), "the run should have used the Bot API"
        run("config", "show")
        run("config", "show", "--json")
        run("status")
        run("status", "--json")
        run("pause")
        run("resume")
        run("preflight", expect=None)
        # The Bot API goes away: every send fails with a network error that names the request.
        api.refuse()
        run("-vv", "--log-format", "text", "shadow", "--duration", "30", "--metrics-port", "0", "--no-report",
            "--namespace", "secrets-2")  # fmt: skip
    # Failing commands: a validation error in the section holding the token, a journal that does not exist, a Redis
    # that refuses the password (the run falls back to memory counters and says so).
    bad_section = {"ULTRA_SIGNALS_TELEGRAM__BACKOFF_INITIAL_S": "100", "ULTRA_SIGNALS_TELEGRAM__BACKOFF_MAX_S": "1"}
    assert run("config", "show", env=bad_section, expect=2).returncode == 2
    missing_db = {"ULTRA_SIGNALS_JOURNAL__URL": journal_url.replace(pg_database, pg_database + "_missing")}
    run("status", env=missing_db, expect=2)
    run("pause", env=missing_db, expect=2)
    run("shadow", "--duration", "5", "--metrics-port", "0", env=missing_db, expect=2)
    wrong_pw = {"ULTRA_SIGNALS_REDIS__URL": redis_url.replace(REDIS_PW, REDIS_PW + "-wrong")}
    run("shadow", "--duration", "5", "--metrics-port", "0", "--no-report", env=wrong_pw, expect=None)
    run("config", "show", env={"ULTRA_SIGNALS_REDIS__PORT": REDIS_PW}, expect=2)  # a secret as a bad value

    leaks: list[str] = []
    for what, out in outputs:
        leaks += _leaks(f"output of {what!r}", out)
    reports = sorted((tmp_path / "reports").glob("*"))
    assert any(p.suffix == ".md" for p in reports) and any(p.suffix == ".json" for p in reports)
    for path in reports:
        if path.suffix in (".md", ".json", ".txt", ".csv"):
            leaks += _leaks(str(path.name), path.read_text(encoding="utf-8", errors="replace"))
    assert decisions.read_text().count("\n") > 0
    leaks += _leaks("decisions file", decisions.read_text())
    engine = create_engine(journal_url.replace(f":{PG_PW}@", "@"))
    meta = MetaData()
    meta.reflect(engine)
    assert "runs" in meta.tables and "decisions" in meta.tables
    rows = 0
    with engine.connect() as c:
        for name, table in meta.tables.items():
            for row in c.execute(select(table)):
                rows += 1
                leaks += _leaks(f"journal table {name}", json.dumps([str(v) for v in row]))
    engine.dispose()
    assert rows > 0
    assert not leaks, "secrets leaked:\n" + "\n".join(sorted(set(leaks)))
    # The secrets were really in play: the URLs are shown with their user and the password hidden.
    shown = next(out for what, out in outputs if what == "config show")
    assert "postgresql+psycopg://postgres:***@127.0.0.1:5432/" in shown and "redis://:***@127.0.0.1:" in shown
