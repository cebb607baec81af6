"""TelegramNotifier end to end against the fake Bot API: cards, digest, pacing measured at the server, errors,
outage and restart, a crash, and the decision loop while the Bot API hangs.

Timing figures printed here (``-s``) are measurements for the report; the tests assert behaviour only.  The
pacing checks are lower bounds on gaps between the server's receipt times, which the pacer guarantees exactly
(see ``pacing.py``), so a slow machine can only make them pass by a wider margin.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.fakes.telegram_server import FakeBotApi
from tests.helpers import max_in_window, until
from ultra_signals.bootstrap import build_runner
from ultra_signals.core.config import ConfigError, Settings, TelegramEvents, load_settings
from ultra_signals.core.decision import Candidate, Decision, Side
from ultra_signals.core.notices import Notice
from ultra_signals.journal import migrate
from ultra_signals.journal.db import make_engine
from ultra_signals.journal.outbox import FAILED, Outbox
from ultra_signals.journal.writer import Journal
from ultra_signals.live.runner import RunStats
from ultra_signals.observability.metrics import Metrics
from ultra_signals.sources.factory import build_source
from ultra_signals.transport.messages import fmt_price, plain_text, signal_card
from ultra_signals.transport.telegram.client import TelegramClient
from ultra_signals.transport.telegram.notifier import TelegramNotifier, make_telegram_notifier
from ultra_signals.transport.telegram.pacing import PacingRules

pytestmark = pytest.mark.timeout(90)


#: Float rounding of sums of seconds (1e-16 s in practice), not a timing tolerance.
EPS = 1e-9

REPO = Path(__file__).resolve().parents[1]
PRIVATE, GROUP = "111", "-1002003004"
FAST = PacingRules(per_chat_interval_s=0.02, group_limit=1000, group_window_s=1.0, global_limit=1000)
SENDER = "test:shadow"


@pytest.fixture
def api() -> Iterator[FakeBotApi]:
    with FakeBotApi() as a:
        yield a


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path}/journal.db"
    eng = make_engine(url)
    migrate.upgrade(eng, url)
    yield eng
    eng.dispose()


def make_notifier(
    api: FakeBotApi,
    engine: Engine,
    *,
    chats: tuple[str, ...] = (PRIVATE, GROUP),
    mode: str = "shadow",
    rules: PacingRules = FAST,
    timeout_s: float = 2.0,
    metrics: Metrics | None = None,
    events: TelegramEvents | None = None,
    sender: str = SENDER,
    **kw: Any,
) -> TelegramNotifier:
    return TelegramNotifier(
        TelegramClient(api.url, api.token, timeout_s=timeout_s),
        Outbox(engine, sender),
        chat_ids=chats,
        mode=mode,
        events=events,
        metrics=metrics,
        rules=rules,
        backoff_initial_s=0.05,
        backoff_max_s=0.2,
        **{"idle_poll_s": 0.1, **kw},
    )


def decision(i: int, allowed: bool, symbol: str = "BTCUSDT", reason: str | None = None) -> Decision:
    t0 = 1_767_571_200_000 + i * 300_000
    side = Side.LONG if i % 2 == 0 else Side.SHORT
    entry = 60000.0 + i * 12.5
    stop = entry - 150 if side is Side.LONG else entry + 150
    sign = 1 if side is Side.LONG else -1
    c = Candidate(
        symbol=symbol,
        timeframe="5m",
        bar_open_time=t0,
        ts=t0 + 300_000,
        side=side,
        score=0.5 * sign,
        confidence=0.7,
        entry=entry,
        stop=stop,
        targets=(entry + sign * 150, entry + sign * 300),
    )
    return Decision("run-t", c, allowed, None if allowed else (reason or "hourly_cap"))


def sample(m: Metrics, kind: str, status: str) -> float:
    return m.registry.get_sample_value("telegram_messages_total", {"kind": kind, "status": status}) or 0.0


# -- cards ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode, prefix", [("shadow", "SHADOW"), ("canary", "CANARY"), ("live", "LIVE")])
def test_each_allowed_signal_gives_exactly_one_card_and_blocked_none(
    api: FakeBotApi, engine: Engine, mode: str, prefix: str
) -> None:
    decisions = [decision(i, allowed=i % 3 == 0, symbol=("BTCUSDT", "ETHUSDT")[i % 2]) for i in range(15)]
    allowed = [d for d in decisions if d.allowed]
    m = Metrics()

    async def go() -> None:
        n = make_notifier(api, engine, mode=mode, metrics=m)
        await n.start()
        for d in decisions:
            n.publish(Notice.signal(d, mode))
        for d in allowed:  # the same decision announced again (a retry) must not make a second card
            n.publish(Notice.signal(d, mode))
        await until(lambda: len(api.delivered) >= 2 * len(allowed))
        await n.aclose()

    asyncio.run(go())
    for chat in (PRIVATE, GROUP):
        got = api.delivered_to(chat)
        assert [g.plain for g in got] == [signal_card(d, mode) for d in allowed]
        for g, d in zip(got, allowed, strict=True):
            c = d.candidate
            assert g.text.startswith(f"<b>{prefix}</b> | {c.symbol} | {c.side.value} | ")
            fields = g.plain.split(" | ")
            assert fields[:3] == [prefix, c.symbol, c.side.value]
            assert fields[3:6] == [
                f"ENTRY:{fmt_price(c.entry)}",
                f"SL:{fmt_price(c.stop)}",
                "TP:" + "/".join(fmt_price(t) for t in c.targets),
            ]
            assert fields[6] == "sniper:allowed"
            assert not g.silent
    assert len(api.delivered) == 2 * len(allowed)
    assert sample(m, "signal", "sent") == 2 * len(allowed)
    assert sample(m, "signal", "duplicate") == 2 * len(allowed)
    assert sample(m, "blocked", "off") == len(decisions) - len(allowed)
    assert m.registry.get_sample_value("telegram_outbox_pending") == 0
    assert (m.registry.get_sample_value("telegram_send_ms_count") or 0) >= 2 * len(allowed)


def test_blocked_digest_when_enabled(api: FakeBotApi, engine: Engine) -> None:
    decisions = [decision(i, allowed=False, reason=("hourly_cap", "cooldown")[i % 2]) for i in range(5)]
    decisions.append(decision(9, allowed=True))

    async def go() -> None:
        n = make_notifier(api, engine, chats=(PRIVATE,), events=TelegramEvents(blocked="silent"))
        await n.start()
        for d in decisions:
            n.publish(Notice.signal(d, "shadow"))
        await until(lambda: len(api.delivered) >= 1)
        await n.aclose()  # flushes the digest

    asyncio.run(go())
    card, digest = api.delivered
    assert card.plain == signal_card(decisions[-1], "shadow")
    assert digest.plain.splitlines() == [
        "Blocked candidates",
        "SHADOW | 5 blocked in the last 60 min",
        "by reason: hourly_cap 3, cooldown 2",
        "by symbol: BTCUSDT 5",
    ]
    assert digest.silent
    assert all("blocked:" not in g.plain for g in (card, digest))  # no individual blocked card


def test_event_modes_on_silent_off(api: FakeBotApi, engine: Engine) -> None:
    events = TelegramEvents(start="silent", stop="off", breaker="on")

    async def go() -> None:
        n = make_notifier(api, engine, chats=(PRIVATE,), events=events)
        await n.start()
        n.publish(Notice.plain("start", "SHADOW | run r1 started"))
        n.publish(Notice.plain("stop", "SHADOW | run r1 completed"))
        n.publish(Notice.plain("breaker", "LIVE | daily loss limit hit <2%> & trading HALTED"))
        await until(lambda: len(api.delivered) >= 2)
        await n.aclose()

    asyncio.run(go())
    got = api.delivered
    assert [(g.plain, g.silent) for g in got] == [
        ("Started\nSHADOW | run r1 started", True),
        ("Circuit breaker\nLIVE | daily loss limit hit <2%> & trading HALTED", False),
    ]


# -- pacing --------------------------------------------------------------------------------------------------


def test_pacing_holds_at_the_server(api: FakeBotApi, engine: Engine) -> None:
    rules = PacingRules(per_chat_interval_s=0.3, group_limit=3, group_window_s=1.0, global_limit=4, global_window_s=0.5)
    chats = ("1", "2", "3", "-100")

    async def go() -> None:
        n = make_notifier(api, engine, chats=chats, rules=rules)
        await n.start()
        for i in range(6):
            n.publish(Notice.plain("signal", f"SHADOW | pace {i}", chat_key=f"pace-{i}"))
        await until(lambda: len(api.delivered) >= 24, timeout=30)
        await n.aclose()

    t0 = time.monotonic()
    asyncio.run(go())
    took = time.monotonic() - t0
    got = api.delivered
    assert len(got) == 24
    for chat in chats:
        times = [g.t for g in got if g.chat_id == chat]
        assert [g.plain for g in got if g.chat_id == chat] == [f"SHADOW | pace {i}" for i in range(6)]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= rules.per_chat_interval_s - EPS, (chat, gaps)
    group = [g.t for g in got if g.chat_id == "-100"]
    assert max_in_window(group, rules.group_window_s, EPS) <= rules.group_limit
    assert max_in_window([g.t for g in got], rules.global_window_s, EPS) <= rules.global_limit
    print(f"\npacing: 24 messages to 4 chats in {took:.2f} s under {rules}")


def test_default_pacing_one_message_per_second_per_chat(api: FakeBotApi, engine: Engine) -> None:
    async def go() -> None:
        n = make_notifier(api, engine, chats=(PRIVATE,), rules=PacingRules())
        await n.start()
        for i in range(3):
            n.publish(Notice.plain("signal", f"SHADOW | one per second {i}", chat_key=f"ops-{i}"))
        await until(lambda: len(api.delivered) >= 3)
        await n.aclose()

    asyncio.run(go())
    times = [g.t for g in api.delivered]
    assert len(times) == 3
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 1.0 - EPS
    print(f"\ndefault pacing gaps at the server: {[round(g, 3) for g in gaps]} s")


# -- errors --------------------------------------------------------------------------------------------------


def test_429_retry_after_is_honoured(api: FakeBotApi, engine: Engine) -> None:
    api.push(("429", 1))
    m = Metrics()

    async def go() -> None:
        n = make_notifier(api, engine, chats=(PRIVATE,), metrics=m)
        await n.start()
        n.publish(Notice.plain("signal", "SHADOW | flood", chat_key="f1"))
        await until(lambda: len(api.delivered) >= 1)
        await n.aclose()

    asyncio.run(go())
    reqs = [r for r in api.requests if r.method == "sendMessage"]
    assert [r.outcome for r in reqs] == ["429", "ok"]
    assert reqs[1].t - reqs[0].t >= 1.0
    assert len(api.delivered) == 1
    assert sample(m, "signal", "rate_limited") == 1 and sample(m, "signal", "sent") == 1


def test_5xx_timeouts_and_refused_connections_are_retried_in_order(api: FakeBotApi, engine: Engine) -> None:
    api.push("ok", "500", "hang", "500")
    m = Metrics()

    async def go() -> None:
        n = make_notifier(api, engine, chats=(PRIVATE,), timeout_s=0.3, metrics=m)
        await n.start()
        for i in range(4):
            n.publish(Notice.plain("signal", f"SHADOW | s{i}", chat_key=f"s{i}"))
        await until(lambda: len(api.delivered) >= 2)
        api.refuse()  # an outage in the middle
        await asyncio.sleep(0.5)
        api.accept()
        await until(lambda: len(api.delivered) >= 4)
        await n.aclose()

    asyncio.run(go())
    assert [g.plain for g in api.delivered] == [f"SHADOW | s{i}" for i in range(4)]
    assert sample(m, "signal", "retry") >= 3
    assert sample(m, "signal", "sent") == 4


def test_4xx_gives_up_with_a_logged_reason_and_goes_on(
    api: FakeBotApi, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    api.push("400", "403")
    m = Metrics()

    async def go() -> None:
        n = make_notifier(api, engine, chats=(PRIVATE,), metrics=m)
        await n.start()
        for i in range(3):
            n.publish(Notice.plain("signal", f"SHADOW | g{i}", chat_key=f"g{i}"))
        await until(lambda: len(api.delivered) >= 1)
        await n.aclose()

    with caplog.at_level(logging.ERROR):
        asyncio.run(go())
    assert [g.plain for g in api.delivered] == ["SHADOW | g2"]
    assert "chat not found" in caplog.text and "bot was blocked by the user" in caplog.text
    rows = Outbox(engine, SENDER).rows()
    assert [r["status"] for r in rows] == [FAILED, FAILED, "sent"]
    assert "HTTP 400: Bad Request: chat not found" in str(rows[0]["last_error"])
    assert sample(m, "signal", "failed") == 2
    assert len([r for r in api.requests if r.method == "sendMessage"]) == 3  # no retry of a 4xx


# -- outage, restart, crash ----------------------------------------------------------------------------------


def test_pending_messages_arrive_once_after_an_outage_and_a_restart(api: FakeBotApi, engine: Engine) -> None:
    notices = [Notice.plain("signal", f"SHADOW | outage {i}", chat_key=f"o{i}") for i in range(8)]
    api.refuse()

    async def first_process() -> int:
        n = make_notifier(api, engine, drain_timeout_s=0.3)
        await n.start()
        for x in notices:
            n.publish(x)
        await asyncio.sleep(0.5)  # the sender keeps failing against the closed port
        await n.aclose()
        return n.pending

    async def second_process() -> int:
        n = make_notifier(api, engine)
        await n.start()
        for x in notices[:3]:  # the restarted runner announces some of the same decisions again
            n.publish(x)
        await until(lambda: len(api.delivered) >= 16)
        await n.aclose()
        return n.pending

    left = asyncio.run(first_process())
    assert left == 16 and api.delivered == []
    api.accept()
    assert asyncio.run(second_process()) == 0
    for chat in (PRIVATE, GROUP):
        assert [g.plain for g in api.delivered_to(chat)] == [plain_text(x.payload) for x in notices]

    async def third_process() -> None:  # yet another start finds nothing to send
        n = make_notifier(api, engine)
        await n.start()
        await asyncio.sleep(0.3)
        await n.aclose()

    asyncio.run(third_process())
    assert len(api.delivered) == 16


CRASH_SCRIPT = """
import asyncio, sys
from ultra_signals.journal.writer import Journal
from ultra_signals.core.notices import Notice
from ultra_signals.transport.telegram.client import TelegramClient
from ultra_signals.transport.telegram.notifier import TelegramNotifier
from ultra_signals.journal.outbox import Outbox
from ultra_signals.transport.telegram.pacing import PacingRules

url, token, db = sys.argv[1:4]

async def main():
    n = TelegramNotifier(TelegramClient(url, token, timeout_s=60), Outbox(Journal(db).engine, "test:shadow"),
                         chat_ids=["111"], mode="shadow", rules=PacingRules(per_chat_interval_s=0.02))
    await n.start()
    for i in range(6):
        n.publish(Notice.plain("signal", f"SHADOW | crash {i}", chat_key=f"c{i}"))
    print("published", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


def test_messages_pending_at_a_crash_arrive_once_after_restart(api: FakeBotApi, engine: Engine, tmp_path: Path) -> None:
    api.push("ok", "ok")
    api.set_default("hang")  # the third request hangs when the process is killed
    db = str(engine.url)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASH_SCRIPT, api.url, api.token, db],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert api.wait_until(lambda: len(api.delivered) == 2 and api.hanging == 1, timeout=30), (
            proc.stderr.read().decode() if proc.poll() is not None and proc.stderr else "timeout"
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    api.set_default("ok")
    api.release_hangs()  # the hung request ends without an answer: Telegram never accepted it
    api.wait_until(lambda: api.hanging == 0, timeout=5)

    async def restart() -> None:
        n = make_notifier(api, engine, chats=("111",))
        await n.start()
        await until(lambda: len(api.delivered) >= 6)
        await asyncio.sleep(0.2)
        await n.aclose()

    asyncio.run(restart())
    assert [g.plain for g in api.delivered] == [f"SHADOW | crash {i}" for i in range(6)]


# -- the decision loop is not held up by the Bot API ---------------------------------------------------------


async def _decision_loop(n: TelegramNotifier, count: int, tag: str) -> tuple[list[float], float]:
    """A stand-in for the runner's loop: decide (a little CPU), publish, yield to other tasks."""
    publish_ms: list[float] = []
    t_start = time.perf_counter()
    for i in range(count):
        sum(j * j for j in range(2000))  # the decision's own work
        t0 = time.perf_counter()
        n.publish(Notice.plain("signal", f"SHADOW | {tag} {i}", chat_key=f"{tag}-{i}"))
        publish_ms.append((time.perf_counter() - t0) * 1000.0)
        await asyncio.sleep(0)
    return publish_ms, (time.perf_counter() - t_start) * 1000.0


def _describe(xs: list[float]) -> str:
    q = statistics.quantiles(xs, n=100)
    return f"p50 {q[49]:.3f} ms, p99 {q[98]:.3f} ms, max {max(xs):.3f} ms"


def test_decision_loop_runs_on_while_the_bot_api_hangs(api: FakeBotApi, engine: Engine) -> None:
    count = 300

    async def healthy() -> tuple[list[float], float]:
        n = make_notifier(api, engine, chats=(PRIVATE,), sender="healthy:shadow", drain_timeout_s=0)
        await n.start()
        res = await _decision_loop(n, count, "healthy")
        await n.aclose()
        return res

    async def hanging() -> tuple[list[float], float, int, int, int]:
        api.set_default("hang")
        n = make_notifier(api, engine, chats=(PRIVATE,), timeout_s=30, drain_timeout_s=0)
        await n.start()
        n.publish(Notice.plain("signal", "SHADOW | first", chat_key="first"))
        assert await until(lambda: api.hanging == 1)  # a sendMessage is stuck at the Bot API
        delivered_before = len(api.delivered)
        publish_ms, loop_ms = await _decision_loop(n, count, "hang")
        still_hanging, pending = api.hanging, n.pending
        api.release_hangs()
        await n.aclose()
        return publish_ms, loop_ms, still_hanging, pending, delivered_before

    healthy_ms, healthy_loop = asyncio.run(healthy())
    hang_ms, hang_loop, still_hanging, pending, delivered_before = asyncio.run(hanging())
    # The loop went through every decision while the send it was waiting on was still hanging.
    assert len(hang_ms) == count
    assert still_hanging == 1
    assert pending == count + 1
    assert len(api.delivered) == delivered_before
    print(
        f"\npublish() with a healthy Bot API: {_describe(healthy_ms)}; loop of {count} decisions {healthy_loop:.1f} ms"
        f"\npublish() while the Bot API hangs: {_describe(hang_ms)}; loop of {count} decisions {hang_loop:.1f} ms"
    )


# -- settings ------------------------------------------------------------------------------------------------


def test_factory_needs_a_token_and_chats_and_never_shows_the_token(engine: Engine) -> None:
    with pytest.raises(ConfigError, match=r"telegram\.bot_token"):
        make_telegram_notifier(load_settings("shadow", environ={}), None, engine, "shadow")
    env = {"ULTRA_SIGNALS_TELEGRAM__BOT_TOKEN": "42:secret-token-value"}
    with pytest.raises(ConfigError, match=r"telegram\.chat_ids") as e:
        make_telegram_notifier(load_settings("shadow", environ=env), None, engine, "shadow")
    assert "secret-token-value" not in str(e.value)
    env["ULTRA_SIGNALS_TELEGRAM__CHAT_IDS"] = "111,-1002003004"
    env["ULTRA_SIGNALS_TELEGRAM__EVENTS__START"] = "off"
    n = make_telegram_notifier(load_settings("shadow", environ=env), Metrics(), engine, "canary")
    assert n.chat_ids == ["111", "-1002003004"]
    assert n.mode_of("start") == "off" and n.mode_of("signal") == "on" and n.mode_of("blocked") == "off"
    assert n.outbox.sender == "default:canary"
    asyncio.run(n.aclose())


# -- with the real runner ------------------------------------------------------------------------------------


def _sim_settings(api: FakeBotApi, **extra: str) -> Settings:
    env = {
        "ULTRA_SIGNALS_TELEGRAM__BOT_TOKEN": api.token,
        "ULTRA_SIGNALS_TELEGRAM__API_URL": api.url,
        "ULTRA_SIGNALS_TELEGRAM__CHAT_IDS": f"{PRIVATE},{GROUP}",
        "ULTRA_SIGNALS_TELEGRAM__PER_CHAT_INTERVAL_S": "0.02",
        "ULTRA_SIGNALS_TELEGRAM__BACKOFF_INITIAL_S": "0.05",
        "ULTRA_SIGNALS_NOTIFIER__SINK": "telegram",
        **extra,
    }
    return load_settings("shadow", environ=env)


def _run_sim(s: Settings, journal: Journal, minutes: int = 2880) -> tuple[RunStats, TelegramNotifier]:
    metrics = Metrics()
    notifier = make_telegram_notifier(s, metrics, journal.engine, s.runtime.mode)
    src = build_source(s, metrics, duration_minutes=minutes)
    runner = build_runner(
        s, source=src, journal=journal, notifier=notifier, metrics=metrics, executor=False, serve_metrics=False
    )
    return asyncio.run(runner.run()), notifier


def _expected_cards(rows: list[dict[str, object]]) -> list[str]:
    out = []
    for r in rows:
        targets = json.loads(str(r["targets_json"]))
        out.append(
            f"SHADOW | {r['symbol']} | {r['side']} | ENTRY:{fmt_price(float(r['entry']))} | "  # type: ignore[arg-type]
            f"SL:{fmt_price(float(r['stop']))} | TP:{'/'.join(fmt_price(t) for t in targets)} | "  # type: ignore[arg-type]
            "sniper:allowed | SIMULATED"
        )
    return out


def test_runner_announces_every_allowed_signal_once(api: FakeBotApi, tmp_path: Path) -> None:
    journal = Journal(f"sqlite:///{tmp_path}/journal.db")
    stats, notifier = _run_sim(_sim_settings(api), journal)
    rows = journal.decisions(stats.run_id)
    journal.close()
    allowed = [r for r in rows if r["allowed"]]
    assert len(allowed) >= 6 and len(rows) > len(allowed)
    for chat in (PRIVATE, GROUP):
        got = [g.plain for g in api.delivered_to(chat)]
        assert got[0].startswith("Started\nSHADOW | ")
        assert any(g.startswith(f"Started\nSHADOW | run {stats.run_id} started") for g in got)
        assert got[-1].startswith(f"Stopped\nSHADOW | run {stats.run_id} completed")
        cards = [g for g in got if "sniper:" in g]
        assert cards == _expected_cards(allowed)
    assert notifier.pending == 0


def test_runner_decides_the_same_while_the_bot_api_hangs(api: FakeBotApi, tmp_path: Path) -> None:
    """Tick-to-decision latency (the runner's own measure) and wall time with a healthy and a hanging Bot API."""
    healthy_journal = Journal(f"sqlite:///{tmp_path}/healthy.db")
    healthy, _ = _run_sim(_sim_settings(api), healthy_journal)
    healthy_rows = healthy_journal.decisions(healthy.run_id)
    healthy_journal.close()
    announced = len(api.delivered_to(PRIVATE))  # cards, start and stop notices per chat
    api.set_default("hang")
    hang_journal = Journal(f"sqlite:///{tmp_path}/hang.db")
    hang, notifier = _run_sim(
        _sim_settings(api, ULTRA_SIGNALS_TELEGRAM__SEND_TIMEOUT_S="1", ULTRA_SIGNALS_TELEGRAM__DRAIN_TIMEOUT_S="0"),
        hang_journal,
    )
    hang_rows = hang_journal.decisions(hang.run_id)
    hang_journal.close()
    api.release_hangs()

    def key(rows: list[dict[str, object]]) -> list[tuple[object, ...]]:
        return [(r["ts"], r["symbol"], r["side"], r["allowed"], r["reason"]) for r in rows]

    assert key(hang_rows) == key(healthy_rows)  # same decisions, unaffected by the dead Bot API
    assert notifier.pending == 2 * announced  # every card and notice still waits in the outbox
    for name, st in (("healthy", healthy), ("hanging", hang)):
        print(
            f"\nrunner with a {name} Bot API: tick-to-decision {_describe(st.latencies_ms.recent())} "
            f"over {len(st.latencies_ms)} decisions; run wall time {st.wall_seconds:.2f} s"
        )


def test_publish_from_another_thread_is_delivered(api: FakeBotApi, engine: Engine) -> None:
    """The Redis health thread announces fallbacks: publishing off the loop thread must work and wake the sender."""
    import threading

    async def go() -> None:
        n = make_notifier(api, engine, chats=(PRIVATE,), idle_poll_s=30.0)  # only a wake-up can deliver in time
        await n.start()
        await asyncio.sleep(0.1)  # the sender has found nothing and waits
        t = threading.Thread(
            target=n.publish, args=(Notice.plain("fallback", "SHADOW | counter backend: redis -> memory"),)
        )
        t.start()
        t.join()
        assert await until(lambda: len(api.delivered) == 1, timeout=10)
        await n.aclose()

    asyncio.run(go())
    assert api.delivered[0].plain == "Counter fallback\nSHADOW | counter backend: redis -> memory"
