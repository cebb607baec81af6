"""The perpetual universe from the real exchangeInfo recording, and rendezvous sharding over it."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import require_data
from ultra_signals.core.instruments import SymbolFilters, parse_exchange_info
from ultra_signals.core.universe import DAY_MS, Shard, ShardError, UniverseRules, assign, owner, select
from ultra_signals.execution.symbol_filters import load_exchange_info_file


def recorded() -> dict[str, SymbolFilters]:
    path = require_data("ws", "binance-futures-exchangeinfo-20210722.txt")
    return parse_exchange_info(load_exchange_info_file(path))


def _inst(name: str, **kw: object) -> SymbolFilters:
    base = SymbolFilters.unfiltered(name)
    fields = {f: getattr(base, f) for f in base.__dataclass_fields__}
    fields.update(contract_type="PERPETUAL", quote_asset="USDT", delivery_ms=4_133_404_800_000)
    fields.update(kw)
    return SymbolFilters(**fields)  # type: ignore[arg-type]


def test_selects_trading_usdt_perpetuals_from_the_recording() -> None:
    inst = recorded()
    uni = select(inst, now_ms=1_626_858_243_909, rules=UniverseRules())
    assert "BTCUSDT" in uni.watch and "ETHUSDT" in uni.watch
    assert len(uni.watch) > 100
    for s in uni.watch:
        f = inst[s]
        assert f.contract_type == "PERPETUAL" and f.quote_asset == "USDT" and f.trading
    # Quarterly contracts and coin-quoted ones are left out, each with a reason.
    quarterly = [s for s, f in inst.items() if f.contract_type.startswith("CURRENT_QUARTER")]
    assert quarterly and all(s in uni.left_out and "contract type" in uni.left_out[s] for s in quarterly)


def test_young_and_delisting_symbols_are_watched_but_take_no_entry() -> None:
    now = 1_700_000_000_000
    inst = {
        "OLDUSDT": _inst("OLDUSDT", onboard_ms=now - 400 * DAY_MS),
        "NEWUSDT": _inst("NEWUSDT", onboard_ms=now - 2 * DAY_MS),
        "BYEUSDT": _inst("BYEUSDT", onboard_ms=now - 400 * DAY_MS, delivery_ms=now + 3 * DAY_MS),
        "HALTUSDT": _inst("HALTUSDT", status="SETTLING"),
        "BTCBUSD": _inst("BTCBUSD", quote_asset="BUSD"),
    }
    uni = select(inst, now, UniverseRules(min_listing_age_days=7))
    assert uni.watch == ["BYEUSDT", "NEWUSDT", "OLDUSDT"]
    assert set(uni.no_entries) == {"NEWUSDT", "BYEUSDT"}
    assert "delisting" in uni.no_entries["BYEUSDT"] and "listed 2.0 days ago" in uni.no_entries["NEWUSDT"]
    assert uni.left_out == {"BTCBUSD": "quote asset BUSD", "HALTUSDT": "status SETTLING"}


def test_volume_filter_needs_a_known_volume() -> None:
    inst = {"AUSDT": _inst("AUSDT"), "BUSDT": _inst("BUSDT"), "CUSDT": _inst("CUSDT")}
    uni = select(inst, 0, UniverseRules(min_quote_volume=1e6), {"AUSDT": 5e6, "BUSDT": 1e5})
    assert uni.watch == ["AUSDT"]
    assert "unknown" in uni.left_out["CUSDT"] and "100000" in uni.left_out["BUSDT"]


@pytest.mark.parametrize("n", range(1, 9))
def test_n_shards_cover_every_recorded_symbol_exactly_once(n: int) -> None:
    symbols = select(recorded(), 1_626_858_243_909, UniverseRules()).watch
    shards = [assign(symbols, Shard(i, n)) for i in range(n)]
    flat = [s for sh in shards for s in sh]
    assert sorted(flat) == sorted(symbols) and len(flat) == len(set(flat))
    if n > 1:  # no shard is left empty or takes everything
        assert all(0 < len(sh) < len(symbols) for sh in shards)


@pytest.mark.parametrize("n", range(1, 8))
def test_adding_a_runner_moves_few_symbols_and_only_to_the_new_one(n: int) -> None:
    symbols = select(recorded(), 1_626_858_243_909, UniverseRules()).watch
    before = {s: owner(s, n) for s in symbols}
    after = {s: owner(s, n + 1) for s in symbols}
    moved = [s for s in symbols if before[s] != after[s]]
    assert all(after[s] == n for s in moved)
    assert len(moved) <= 1.5 / n * len(symbols)


@settings(max_examples=60, deadline=None)
@given(st.sets(st.from_regex(r"[A-Z0-9]{2,10}USDT", fullmatch=True), min_size=1, max_size=60), st.integers(1, 12))
def test_rendezvous_properties_on_any_symbol_set(symbols: set[str], n: int) -> None:
    union = [s for i in range(n) for s in assign(symbols, Shard(i, n))]
    assert sorted(union) == sorted(symbols)
    for s in symbols:  # growing never moves a symbol between old shards
        assert owner(s, n + 1) in (owner(s, n), n)


@pytest.mark.parametrize("spec", ["", "1", "2/2", "-1/3", "a/b", "0/0", "1/2/3"])
def test_bad_shard_specs_are_refused_with_the_form_expected(spec: str) -> None:
    with pytest.raises(ShardError, match=r"i/n|0 <= i < n"):
        Shard.parse(spec)


def test_shard_spec_round_trips() -> None:
    assert str(Shard.parse(" 2/5 ")) == "2/5"
    assert Shard.parse("0/1") == Shard(0, 1)


def test_recorded_instruments_keep_listing_dates() -> None:
    btc = recorded()["BTCUSDT"]
    assert btc.onboard_ms == 1_569_398_400_000 and btc.delivery_ms == 4_133_404_800_000
    assert btc.tick_size == Decimal("0.01")


# -- the runtime refresh: what changed since start ------------------------------------------------------------
NOW_REC = 1_626_858_243_909  # the recording's serverTime


def test_refresh_diff_on_the_real_recording_finds_each_kind_of_change() -> None:
    from dataclasses import replace

    from ultra_signals.core.universe import EntryGate, EntryGateFilter, diff

    inst = recorded()
    rules = UniverseRules(min_listing_age_days=7)
    shard = Shard(1, 4)
    start = select(inst, NOW_REC, rules)
    watched = assign([s for s in start.watch if s not in start.no_entries], shard)
    assert len(watched) > 10
    bye, gone, held_elsewhere = watched[0], watched[1], "BTCUSDT"
    later = dict(inst)
    later[bye] = replace(inst[bye], delivery_ms=NOW_REC + 3 * DAY_MS)  # a delisting announced
    later[gone] = replace(inst[gone], status="SETTLING")  # delisted
    del later[held_elsewhere]  # gone from exchangeInfo altogether
    # A new contract, listed long enough ago, in this shard's share; and one too young to trade yet.
    new = next(f"NEW{i}USDT" for i in range(1000) if owner(f"NEW{i}USDT", 4) == 1)
    young = next(f"YNG{i}USDT" for i in range(1000) if owner(f"YNG{i}USDT", 4) == 1)
    later[new] = replace(inst[bye], symbol=new, onboard_ms=NOW_REC - 30 * DAY_MS)
    later[young] = replace(inst[bye], symbol=young, onboard_ms=NOW_REC - 1 * DAY_MS)
    gate = EntryGate()
    ch = diff(select(later, NOW_REC, rules), watched=watched, held=[held_elsewhere], gate=gate.blocked, shard=shard)
    assert list(ch.listed) == [new]  # the young one waits until it is old enough
    assert list(ch.closed) == [bye] and "delisting scheduled" in ch.closed[bye]
    assert ch.delisted == {gone: "status SETTLING", held_elsewhere: "not in exchangeInfo"}
    assert ch.reopened == []
    gate.apply(ch)
    assert gate.reason(bye) == gate.reason(gone) == "no_entries" and gate.reason(watched[2]) is None

    class Ctx:  # the filter reads only the candidate's symbol
        def __init__(self, symbol: str) -> None:
            self.candidate = type("C", (), {"symbol": symbol})()

    f = EntryGateFilter(gate)
    assert f.check(Ctx(bye)) == "no_entries" and f.check(Ctx(watched[2])) is None
    # The same refresh again changes nothing; the delisting cancelled reopens the symbol.
    again = diff(select(later, NOW_REC, rules), watched=watched, held=[], gate=gate.blocked, shard=shard)
    assert again.closed == {} and again.reopened == []
    later[bye] = inst[bye]
    back = diff(select(later, NOW_REC, rules), watched=watched, held=[], gate=gate.blocked, shard=shard)
    assert back.reopened == [bye]
    gate.apply(back)
    assert gate.reason(bye) is None


def test_a_volume_drop_is_not_a_delisting() -> None:
    from ultra_signals.core.universe import diff

    inst = {"AUSDT": _inst("AUSDT"), "BUSDT": _inst("BUSDT")}
    uni = select(inst, 0, UniverseRules(min_quote_volume=1e6), {"AUSDT": 5e6, "BUSDT": 10.0})
    ch = diff(uni, watched=["AUSDT", "BUSDT"], held=["BUSDT"], gate={}, shard=None)
    assert ch.empty
