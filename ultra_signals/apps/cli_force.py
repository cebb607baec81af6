"""``ultra-signals force-enter SYMBOL --side long|short`` and ``force-exit SYMBOL``: an operator's drill of the order path.

Before a canary, an operator wants to see one real entry go in with both brackets, and come out again, on the
account and the settings the runner will use.  These commands do exactly what a signal would do from the
executor on: the entry is sized by the profile's rules (stop ``scoring.stop_atr_mult`` × ATR of the primary
timeframe's closed bars, take-profit at the configured R target, as the pipeline computes them), passes the risk
gateway and the breakers, is journaled like any trade, and gets its stop and take-profit as algo orders.  Its
decision id carries ``manual`` (run id ``manual-<ms>``) and it takes no signal cap slot (the sniper is not asked).
``--min-size`` sizes to the smallest quantity the symbol's filters allow.  Both ask for confirmation unless
``--yes`` and refuse while trading is HALTED unless ``--force``.

``force-exit`` closes the journaled trade on SYMBOL (its brackets cancelled, a reduce-only market order) and
waits for the exit fill; a position the journal does not know is refused (use ``kill``, or close it by hand).
It goes through the operator layer (:meth:`ultra_signals.control.Control.force_exit`, as Telegram's /forceexit
and the web API do) and is allowed in every trading state: an exit only reduces exposure.  Both commands start
their one-shot executor the same way (:func:`_manual_executor`).
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ultra_signals.apps.cli_execution import JournalOpt, ProfileOpt, SecretsOpt, _journal, console

if TYPE_CHECKING:  # the rest is imported where used: the CLI starts without the runner's libraries
    from ultra_signals.core.config import Settings
    from ultra_signals.core.decision import Side
    from ultra_signals.execution.executor import TradingExecutor
    from ultra_signals.journal.writer import Journal

WAIT_S = 30.0


def _live_settings(profile: str | None, secrets: Path | None, overrides: dict[str, Any] | None = None) -> Settings:
    from ultra_signals.core.config import ConfigError, load_settings

    try:
        s = load_settings(profile, secrets_file=secrets, overrides=overrides or {})
    except ConfigError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2) from None
    if s.runtime.mode not in ("canary", "live") or s.execution.broker != "binance":
        typer.echo(
            f"force-enter/force-exit trade on Binance: profile {s.profile} is mode {s.runtime.mode} with broker"
            f" {s.execution.broker} (use -p canary or a production profile)",
            err=True,
        )
        raise typer.Exit(2)
    return s


def _refuse_if_halted(j: Journal, force: bool) -> None:
    from ultra_signals.execution.breakers import TradingState, load_state

    st = load_state(j)
    if st.state is not TradingState.ACTIVE and not force:
        typer.echo(f"trading is {st.state.value} ({st.breaker}: {st.detail}); resume first, or --force", err=True)
        raise typer.Exit(1)


async def _market(s: Settings, symbol: str) -> tuple[float, float, dict[str, Any]]:
    """Last closed price and ATR of the primary timeframe, and the exchange's filters (public REST)."""
    from ultra_signals.core.timeframes import tf_ms
    from ultra_signals.features.indicators import Atr
    from ultra_signals.observability.metrics import Metrics
    from ultra_signals.sources.binance.rest import BinanceRest, RestError
    from ultra_signals.venues.binance.endpoints import endpoints_from_settings

    b = s.binance
    rest = BinanceRest(endpoints_from_settings(b).rest, Metrics(), timeout_s=b.rest_timeout_s, max_retries=2)
    try:
        info = await rest.exchange_info()
        tf = s.runtime.primary_timeframe
        period = s.features.atr_period
        now = int(time.time() * 1000)
        bars = await rest.closed_klines(symbol, tf, now - (period * 3 + 2) * tf_ms(tf), now)
    finally:
        await rest.aclose()
    atr = Atr(period)
    for k in bars:
        atr.update(k.high, k.low, k.close)
    if not bars or not atr.ready or not math.isfinite(atr.value) or atr.value <= 0:
        raise RestError(f"{symbol} {tf}: not enough closed bars for ATR({period}) ({len(bars)} bars)")
    return bars[-1].close, atr.value, info


def force_enter(
    symbol: Annotated[str, typer.Argument(help="e.g. BTCUSDT")],
    side: Annotated[str, typer.Option("--side", help="long or short")],
    min_size: Annotated[bool, typer.Option("--min-size", help="Smallest size the symbol's filters allow.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Even while trading is HALTED.")] = False,
    profile: ProfileOpt = None,
    secrets_file: SecretsOpt = None,
    journal_url: JournalOpt = None,
) -> None:
    """Place one entry on SYMBOL sized by the profile, with both brackets, journaled as a manual trade."""
    import asyncio

    from ultra_signals.core.decision import Side
    from ultra_signals.core.instruments import parse_exchange_info
    from ultra_signals.engine.scoring import levels
    from ultra_signals.sources.binance.rest import RestError
    from ultra_signals.venues.binance.endpoints import endpoints_from_settings

    if side not in ("long", "short"):
        typer.echo("--side must be long or short", err=True)
        raise typer.Exit(2)
    symbol = symbol.upper()
    s = _live_settings(profile, secrets_file)
    j = _journal(s, journal_url)
    try:
        _refuse_if_halted(j, force)
        try:
            price, atr, info = asyncio.run(_market(s, symbol))
        except RestError as e:
            typer.echo(f"force-enter: {e}", err=True)
            raise typer.Exit(1) from None
        f = parse_exchange_info(info).get(symbol)
        if f is None:
            typer.echo(
                f"force-enter: {symbol} is not a USDⓈ-M symbol on {endpoints_from_settings(s.binance).rest}", err=True
            )
            raise typer.Exit(2)
        if min_size:
            step, min_qty = f.market_step_size, f.market_min_qty
            qty = max(min_qty, Decimal(math.ceil(float(f.min_notional) / price / float(step))) * step)
            cap = float(qty) * price + price * float(step) * 0.5
            s = _live_settings(profile, secrets_file, {"execution.max_notional_usdt": cap})
        the_side = Side.LONG if side == "long" else Side.SHORT
        stop, targets = levels(the_side, price, atr, s.scoring)
        where = "TESTNET" if s.binance.testnet else endpoints_from_settings(s.binance).rest
        if not yes and not typer.confirm(
            f"Place a {side.upper()} market entry on {symbol} at ~{price:g} (stop {stop:g}, ATR {atr:g}) on {where}?",
            default=False,
        ):
            typer.echo("aborted: nothing was placed")
            raise typer.Exit(1)
        code = asyncio.run(_enter(s, j, symbol, the_side, price, stop, targets, force))
    finally:
        j.close()
    raise typer.Exit(code)


@dataclass
class _Manual:
    """A one-shot executor and how its run ends (the command sets ``status``; ``failed`` unless it does)."""

    executor: TradingExecutor
    status: str = "failed"


@asynccontextmanager
async def _manual_executor(s: Settings, j: Journal, command: str, prefix: str) -> AsyncIterator[_Manual]:
    """A started one-shot executor on its own journaled run (``<prefix>-<ms>``), closed and its run ended after.

    A :class:`BrokerError` at start propagates (the caller says "refused"); the run then ends ``failed``.
    """
    from ultra_signals.execution.executor import TradingExecutor, make_executor
    from ultra_signals.observability.metrics import Metrics
    from ultra_signals.transport.notifier import ConsoleNotifier

    now = int(time.time() * 1000)
    run_id = f"{prefix}-{now}"
    j.start_run(run_id, mode=s.runtime.mode, profile=s.profile, source="manual", simulated=False,
                namespace=s.redis.namespace, settings={"command": command})  # fmt: skip
    e = make_executor(s, Metrics(), j, ConsoleNotifier(console), run_id)
    assert isinstance(e, TradingExecutor)
    m = _Manual(e)
    try:
        await e.start()
        yield m
    finally:
        await e.aclose()
        j.end_run(run_id, m.status, e.summary(), now, int(time.time() * 1000))


async def _enter(
    s: Settings, j: Journal, symbol: str, side: Side, price: float, stop: float, targets: tuple[float, ...], force: bool
) -> int:
    import asyncio

    from ultra_signals.core.decision import Candidate, Decision
    from ultra_signals.core.timeframes import tf_ms
    from ultra_signals.execution.breakers import StateRecord, TradingState
    from ultra_signals.execution.brokers.base import BrokerError

    now = int(time.time() * 1000)
    tf = s.runtime.primary_timeframe
    try:
        async with _manual_executor(s, j, "force-enter", "manual") as m:
            e = m.executor
            cand = Candidate(symbol=symbol, timeframe=tf, bar_open_time=now - now % tf_ms(tf), ts=now, side=side,
                             score=0.0, confidence=0.0, entry=price, stop=stop, targets=targets)  # fmt: skip
            decision = Decision(e.run_id, cand, True, None)
            if force and e.risk.state.state is not TradingState.ACTIVE:  # this command only; the journal keeps HALTED
                # The risk engine holds the state in memory and re-reads the journal only on a health tick, which
                # this one-shot command never sends: the override lasts for this one entry.
                e.risk.state = StateRecord(
                    TradingState.ACTIVE, "force", "force-enter --force", now, time.time(), "operator"
                )
            e.on_signal(decision)
            await e.broker.drain(WAIT_S)
            t = e.trades.get(decision.id)
            deadline = time.monotonic() + WAIT_S
            while t is not None and t.status == "pending" and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if t is None:
                console.print("force-enter refused by the risk gateway or the breakers (see the journal's refusals)")
                return 1
            m.status = "completed" if t.status == "open" else t.status
            console.print(
                f"force-enter {symbol} {side.value}: trade {decision.id} {t.status}, qty {t.qty} @ {t.entry_price}"
            )
            return 0 if t.status == "open" else 1
    except BrokerError as err:
        console.print(f"force-enter refused: {err}")
        return 1


def force_exit(
    symbol: Annotated[str, typer.Argument(help="e.g. BTCUSDT")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    force: Annotated[
        bool, typer.Option("--force", hidden=True, help="No effect: exits are allowed in every trading state.")
    ] = False,
    profile: ProfileOpt = None,
    secrets_file: SecretsOpt = None,
    journal_url: JournalOpt = None,
) -> None:
    """Close the journaled position on SYMBOL and its brackets (reduce-only market), and wait for the fill.

    Allowed while trading is HALTED or REDUCING (an exit only reduces exposure), as Telegram's /forceexit.
    """
    import asyncio

    from ultra_signals.control import InvalidInput, parse_symbol

    try:
        symbol = parse_symbol(symbol)
    except InvalidInput as e:
        typer.echo(e.message, err=True)
        raise typer.Exit(2) from None
    s = _live_settings(profile, secrets_file)
    j = _journal(s, journal_url)
    try:
        if not yes and not typer.confirm(
            f"Close the position on {symbol} at market and cancel its brackets?", default=False
        ):
            typer.echo("aborted: nothing was changed")
            raise typer.Exit(1)
        code = asyncio.run(_exit(s, j, symbol))
    finally:
        j.close()
    raise typer.Exit(code)


async def _exit(s: Settings, j: Journal, symbol: str) -> int:
    from ultra_signals.control import Control, ControlError, JournalView
    from ultra_signals.control.exits import executor_closer
    from ultra_signals.execution.brokers.base import BrokerError
    from ultra_signals.transport.telegram.format import force_exit_text

    try:
        async with _manual_executor(s, j, "force-exit", "manual-exit") as m:
            closer = executor_closer(m.executor, lambda: int(time.time() * 1000), wait_s=WAIT_S)
            control = Control(j, JournalView(j), close=closer, settings=s)
            try:
                r = await control.force_exit(symbol, confirm=True, by="cli")
            except ControlError as err:
                console.print(f"force-exit: {err.message}")
                return 1
            m.status = "completed" if r.status == "closed" else r.status
            console.print(force_exit_text(r))
            return 0 if r.closed else 1
    except BrokerError as err:
        console.print(f"force-exit refused: {err}")
        return 1


def register(app: typer.Typer) -> None:
    app.command("force-enter")(force_enter)
    app.command("force-exit")(force_exit)
