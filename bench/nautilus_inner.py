# mypy: ignore-errors
"""The NautilusTrader side of bench/bench_nautilus.py, run by the Python of a separate venv that has
``nautilus_trader`` (never the project's venv: it is not a dependency of ultra-signals).

    /work/nautilus-venv/bin/python bench/nautilus_inner.py <folder of SYMBOL-1m.csv>

A plain NautilusTrader backtest, whole process (imports, CSV load, bar wrangling, engine, strategy): every
``*-1m.csv`` file of the folder becomes a 1-minute bar series of a Binance-style USDT perpetual, and one strategy
per symbol keeps three indicators (EMA 50, RSI 14, ATR 14) and trades a simple rule (long when RSI < 30 above
the EMA, flat when RSI > 70), so that orders, fills and positions go through its engine too.  Prices are rounded
to 8 decimals (the instrument's precision); the CSVs hold up to 10 significant digits.  Prints one line.
"""

from __future__ import annotations

import sys
import time
from decimal import Decimal
from pathlib import Path

T0 = time.perf_counter()

import pandas as pd  # noqa: E402
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig  # noqa: E402
from nautilus_trader.config import LoggingConfig, StrategyConfig  # noqa: E402
from nautilus_trader.indicators import (  # noqa: E402
    AverageTrueRange,
    ExponentialMovingAverage,
    RelativeStrengthIndex,
)
from nautilus_trader.model.currencies import BTC, USDT  # noqa: E402
from nautilus_trader.model.data import Bar, BarType  # noqa: E402
from nautilus_trader.model.enums import AccountType, OmsType, OrderSide  # noqa: E402
from nautilus_trader.model.identifiers import InstrumentId, Symbol, Venue  # noqa: E402
from nautilus_trader.model.instruments import CryptoPerpetual  # noqa: E402
from nautilus_trader.model.objects import Money, Price, Quantity  # noqa: E402
from nautilus_trader.persistence.wranglers import BarDataWrangler  # noqa: E402
from nautilus_trader.trading.strategy import Strategy  # noqa: E402

VENUE = Venue("BINANCE")


class ThreeIndicatorsConfig(StrategyConfig, frozen=True):
    instrument_id: InstrumentId
    bar_type: BarType


class ThreeIndicators(Strategy):
    def __init__(self, config: ThreeIndicatorsConfig) -> None:
        super().__init__(config)
        self.ema = ExponentialMovingAverage(50)
        self.rsi = RelativeStrengthIndex(14)
        self.atr = AverageTrueRange(14)
        self.bars = 0
        self.entries = 0

    def on_start(self) -> None:
        for ind in (self.ema, self.rsi, self.atr):
            self.register_indicator_for_bars(self.config.bar_type, ind)
        self.subscribe_bars(self.config.bar_type)

    def on_bar(self, bar: Bar) -> None:
        self.bars += 1
        if not (self.ema.initialized and self.rsi.initialized and self.atr.initialized):
            return
        close = bar.close.as_double()
        flat = self.portfolio.is_flat(self.config.instrument_id)
        if flat and self.rsi.value < 0.30 and close > self.ema.value and self.atr.value > 0:
            self.submit_order(
                self.order_factory.market(self.config.instrument_id, OrderSide.BUY, Quantity.from_int(1000))
            )
            self.entries += 1
        elif not flat and self.rsi.value > 0.70:
            self.close_all_positions(self.config.instrument_id)

    def on_stop(self) -> None:
        self.close_all_positions(self.config.instrument_id)


def instrument(symbol: str) -> CryptoPerpetual:
    return CryptoPerpetual(
        instrument_id=InstrumentId(Symbol(f"{symbol}-PERP"), VENUE),
        raw_symbol=Symbol(symbol),
        base_currency=BTC,
        quote_currency=USDT,
        settlement_currency=USDT,
        is_inverse=False,
        price_precision=8,
        price_increment=Price.from_str("0.00000001"),
        size_precision=0,
        size_increment=Quantity.from_int(1),
        max_quantity=None,
        min_quantity=Quantity.from_int(1),
        max_notional=None,
        min_notional=None,
        max_price=None,
        min_price=None,
        margin_init=Decimal("0.05"),
        margin_maint=Decimal("0.025"),
        maker_fee=Decimal("0.0002"),
        taker_fee=Decimal("0.0004"),
        ts_event=0,
        ts_init=0,
    )


def main() -> None:
    folder = Path(sys.argv[1])
    engine = BacktestEngine(config=BacktestEngineConfig(logging=LoggingConfig(log_level="ERROR")))
    engine.add_venue(
        venue=VENUE,
        oms_type=OmsType.NETTING,
        account_type=AccountType.MARGIN,
        base_currency=None,
        starting_balances=[Money(1_000_000, USDT)],
    )
    strategies = []
    n_bars = 0
    for path in sorted(folder.glob("*-1m.csv")):
        symbol = path.name.split("-")[0]
        inst = instrument(symbol)
        engine.add_instrument(inst)
        df = pd.read_csv(path)
        df.index = pd.to_datetime(df.pop("open_time"), unit="ms", utc=True)
        df[["open", "high", "low", "close"]] = df[["open", "high", "low", "close"]].round(8)
        bar_type = BarType.from_str(f"{inst.id}-1-MINUTE-LAST-EXTERNAL")
        bars = BarDataWrangler(bar_type, inst).process(df)
        n_bars += len(bars)
        engine.add_data(bars)
        strat = ThreeIndicators(ThreeIndicatorsConfig(instrument_id=inst.id, bar_type=bar_type))
        engine.add_strategy(strat)
        strategies.append(strat)
    t_run = time.perf_counter()
    engine.run()
    t_end = time.perf_counter()
    seen = sum(s.bars for s in strategies)
    entries = sum(s.entries for s in strategies)
    fills = len(engine.cache.orders())
    engine.dispose()
    print(
        f"nautilus: {n_bars} bars loaded, {seen} seen by the strategies, {entries} entries, {fills} orders; "
        f"imports+load {t_run - T0:.2f} s, engine.run {t_end - t_run:.2f} s (wall, inside the process)"
    )


if __name__ == "__main__":
    main()
