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
        assert s.runtime.universe == "list" and s.runtime.shard == f"{i}/4"
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
