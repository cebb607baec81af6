"""``runtime.symbols: all`` and ``runtime.shard`` resolved against a local fake Binance serving the real
exchangeInfo recording: the composition root hands the source exactly this runner's symbols."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import require_data
from tests.fakes.binance_server import FakeBinance
from ultra_signals.bootstrap import BootstrapError, resolve_symbols
from ultra_signals.core.config import load_settings
from ultra_signals.core.instruments import parse_exchange_info
from ultra_signals.core.universe import Shard, UniverseRules, assign, select
from ultra_signals.execution.symbol_filters import load_exchange_info_file
from ultra_signals.observability.metrics import Metrics

NOW = 1_626_858_243_909  # the recording's serverTime


@pytest.fixture
def fake() -> Iterator[FakeBinance]:
    """A FakeBinance on its own event loop thread (resolve_symbols runs its own loop, as the CLI does)."""
    info = load_exchange_info_file(require_data("ws", "binance-futures-exchangeinfo-20210722.txt"))
    loop = asyncio.new_event_loop()
    srv = FakeBinance(lambda: NOW, exchange_info=info)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(srv.start(), loop).result(10)
    try:
        yield srv
    finally:
        asyncio.run_coroutine_threadsafe(srv.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def _settings(srv: FakeBinance, **over: Any) -> Any:
    base = {"runtime.source": "binance", "binance.rest_url": srv.rest_url, "binance.rest_max_retries": 0}
    base.update(over)
    return load_settings(overrides=base, environ={})


def test_all_symbols_sharded_four_ways_cover_the_universe_once(fake: FakeBinance) -> None:
    expected = select(parse_exchange_info(fake.exchange_info), NOW, UniverseRules(min_listing_age_days=7))
    watched = [s for s in expected.watch if s not in expected.no_entries]
    seen: list[str] = []
    for i in range(4):
        s, notices = resolve_symbols(
            _settings(fake, **{"runtime.symbols": "all", "runtime.shard": f"{i}/4"}), Metrics()
        )
        assert s.runtime.universe == "resolved" and s.runtime.shard == f"{i}/4"
        assert s.runtime.symbols == assign(watched, Shard(i, 4))
        assert any(n.startswith(f"shard {i}/4:") for n in notices)
        seen += s.runtime.symbols
    assert sorted(seen) == sorted(watched) and len(seen) == len(set(seen))
    assert [p for p, _ in fake.rest_log].count("/fapi/v1/exchangeInfo") == 4


def test_volume_floor_reads_the_24h_tickers(fake: FakeBinance) -> None:
    fake.quote_volumes = {"BTCUSDT": 9e9, "ETHUSDT": 5e9, "XRPUSDT": 1e5}
    s, _ = resolve_symbols(_settings(fake, **{"runtime.symbols": "all", "runtime.min_quote_volume": 1e6}), Metrics())
    assert s.runtime.symbols == ["BTCUSDT", "ETHUSDT"]
    assert ("/fapi/v1/ticker/24hr", {}) in fake.rest_log


def test_a_list_is_sharded_without_asking_the_exchange(fake: FakeBinance) -> None:
    syms = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "BNBUSDT"]
    got = []
    for i in range(2):
        s, _ = resolve_symbols(
            _settings(fake, **{"runtime.symbols": ",".join(syms), "runtime.shard": f"{i}/2"}), Metrics()
        )
        got += s.runtime.symbols
    assert sorted(got) == sorted(syms) and fake.rest_log == []


def test_all_symbols_needs_the_binance_source() -> None:
    s = load_settings(overrides={"runtime.symbols": "all"}, environ={})
    with pytest.raises(BootstrapError, match="needs the binance source"):
        resolve_symbols(s, Metrics())


def test_unreachable_exchange_is_a_clear_error(fake: FakeBinance) -> None:
    fake.fail_next("/fapi/v1/exchangeInfo", 503)
    with pytest.raises(BootstrapError, match="could not read the universe"):
        resolve_symbols(_settings(fake, **{"runtime.symbols": "all"}), Metrics())


def test_plain_settings_pass_through_unchanged() -> None:
    s = load_settings(environ={})
    assert resolve_symbols(s, Metrics()) == (s, [])


# -- listings and delistings at runtime ------------------------------------------------------------------------
def _changed(info: dict[str, Any], **by_symbol: dict[str, Any] | None) -> dict[str, Any]:
    """The recorded exchangeInfo with some symbols' fields changed (None: the symbol removed)."""
    out = []
    for sym in info["symbols"]:
        if sym["symbol"] in by_symbol:
            change = by_symbol[sym["symbol"]]
            if change is None:
                continue
            sym = {**sym, **change}
        out.append(sym)
    return {**info, "symbols": out}


def test_hourly_refresh_gates_a_delisting_and_alerts_on_a_delisted_position(fake: FakeBinance, tmp_path: Any) -> None:
    from tests.helpers import RecordingNotifier
    from tests.test_inbox import decision, settings_for
    from ultra_signals.core.universe import EntryGate
    from ultra_signals.execution.executor import TradingExecutor, make_executor
    from ultra_signals.execution.listing import ListingWatch
    from ultra_signals.journal.writer import Journal
    from ultra_signals.sources.universe import UniverseRefresher

    settings, _ = resolve_symbols(_settings(fake, **{"runtime.symbols": "all", "runtime.shard": "0/2"}), Metrics())
    assert settings.runtime.universe == "resolved" and settings.runtime.universe_refresh_s == 3600.0
    watched = settings.runtime.symbols
    bye, gone = watched[0], watched[1]
    # The executor holds a position on `gone` (a paper trade, pending is enough: it holds the symbol).
    ex_settings = settings_for(tmp_path / "ex")
    notifier = RecordingNotifier()
    ex = make_executor(ex_settings, None, Journal(ex_settings.journal.url), notifier, "run-x")
    assert isinstance(ex, TradingExecutor)
    ex.on_signal(decision("run-x", gone))
    gate = EntryGate()
    watch = ListingWatch(gate, ex, notifier, mode="live", run_id="run-x")
    refresher = UniverseRefresher(
        settings, Metrics(), watched=watched, gate=gate, on_change=watch, held=watch.held, interval_s=3600
    )
    # Nothing changed on the exchange: nothing to say.
    first = asyncio.run(refresher.refresh_once())
    assert first is not None and first.empty and not notifier.notices
    # An hour later the exchange announces one delisting (deliveryDate set) and has settled another.
    soon = 1_626_858_243_909 + 3 * 86_400_000
    changes: dict[str, dict[str, Any] | None] = {bye: {"deliveryDate": soon}, gone: {"status": "SETTLING"}}
    fake.exchange_info = _changed(fake.exchange_info, **changes)
    ch = asyncio.run(refresher.refresh_once())
    assert ch is not None and list(ch.closed) == [bye] and ch.delisted == {gone: "status SETTLING"}
    assert gate.reason(bye) == "no_entries" and gate.reason(gone) == "no_entries"
    assert gate.reason(watched[2]) is None
    # The held position on the delisted contract is an incident: journaled and alerted, not dropped.
    incidents = ex.store.events(kind="incident")
    assert [e["name"] for e in incidents] == ["delisted_position"] and gone in incidents[0]["detail"]
    texts = [str(n.payload) for n in notifier.notices]
    assert any("DELISTED WITH A POSITION OPEN" in t and gone in t for t in texts)
    assert any("no new entries" in t and bye in t for t in texts)
    assert ex.portfolio.holding(gone) is not None  # still held: the operator decides, nothing silently closed
    assert [p for p, _ in fake.rest_log].count("/fapi/v1/exchangeInfo") == 3


def test_a_failed_refresh_keeps_the_gates(fake: FakeBinance) -> None:
    from ultra_signals.core.universe import EntryGate
    from ultra_signals.sources.universe import UniverseRefresher

    settings, _ = resolve_symbols(_settings(fake, **{"runtime.symbols": "all"}), Metrics())
    gate = EntryGate({"XUSDT": "delisting scheduled"})
    seen: list[Any] = []
    metrics = Metrics()
    refresher = UniverseRefresher(settings, metrics, watched=settings.runtime.symbols, gate=gate, on_change=seen.append)
    fake.fail_next("/fapi/v1/exchangeInfo", 503)
    assert asyncio.run(refresher.refresh_once()) is None
    assert refresher.failures == 1 and not seen and gate.blocked == {"XUSDT": "delisting scheduled"}
    assert metrics.errors.labels(kind="universe_refresh")._value.get() == 1


def test_build_runner_wires_the_refresh_for_a_live_run_only(fake: FakeBinance, tmp_path: Any) -> None:
    from tests.test_cli_db import LiveSim
    from ultra_signals.bootstrap import build_runner
    from ultra_signals.core.universe import EntryGateFilter
    from ultra_signals.journal.writer import Journal
    from ultra_signals.sources.sim import SimSource
    from ultra_signals.transport.notifier import NullNotifier

    over = {"runtime.symbols": "all", "runtime.shard": "0/8", "runtime.universe_refresh_s": 0.05}
    settings, _ = resolve_symbols(_settings(fake, **over), Metrics())
    syms = settings.runtime.symbols
    runners = {}
    for name, cls in (("live", LiveSim), ("replay", SimSource)):
        src = cls(settings.sim, syms, settings.runtime.timeframes, 5, settings.runtime.warmup_bars)
        runners[name] = build_runner(
            settings,
            source=src,
            journal=Journal(f"sqlite:///{tmp_path}/{name}.db"),
            notifier=NullNotifier(),
            metrics=Metrics(),
            executor=False,
            serve_metrics=False,
        )
    assert runners["replay"].background == []  # a replay's universe is the recording's: nothing to refresh
    assert not any(isinstance(f, EntryGateFilter) for f in runners["replay"].engine.filters)
    live = runners["live"]
    names = [f.name for f in live.engine.filters]
    assert names.index("no_entries") == names.index("trading_halted") + 1 and len(live.background) == 1
    gate = next(f for f in live.engine.filters if isinstance(f, EntryGateFilter)).gate
    fake.exchange_info = _changed(fake.exchange_info, **{syms[0]: {"status": "SETTLING"}})
    before = [p for p, _ in fake.rest_log].count("/fapi/v1/exchangeInfo")

    async def refresh_in_background() -> None:
        task = asyncio.create_task(live.background[0]())
        for _ in range(200):  # bounded: 200 × 20 ms
            await asyncio.sleep(0.02)
            if gate.blocked:
                break
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(refresh_in_background())
    assert [p for p, _ in fake.rest_log].count("/fapi/v1/exchangeInfo") > before
    assert gate.blocked == {syms[0]: "status SETTLING"}
    # The settled contract's feed falls silent: the breakers' staleness leaves it out, the others still count.
    import time

    from ultra_signals.execution.breakers import RunnerHealth

    seen: list[RunnerHealth] = []

    class Capture:
        def on_health(self, h: RunnerHealth) -> None:
            seen.append(h)

    live.executor = Capture()  # type: ignore[assignment]
    now = int(time.time() * 1000)
    live._last_ts = {syms[0]: now - 3_600_000, syms[1]: now - 5_000}
    live._maybe_refresh(force=True)
    assert live.feed_exempt is gate.blocked and 4.0 < seen[-1].max_feed_age_s < 60.0
    live._last_ts = {syms[0]: now - 3_600_000}
    live._maybe_refresh(force=True)
    assert seen[-1].max_feed_age_s == 0.0
    for r in runners.values():
        r.counters.close()
