"""The broker interface every venue implements, and the plain values that cross it.

Commands (:meth:`Broker.submit`, :meth:`Broker.close_position`) return at once: the paper broker acts on the
next market event, the Binance broker on its own asyncio task, so the decision loop is never blocked by I/O.
Results come back as calls on a :class:`BrokerListener` (the executor), from whichever context produced them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal, Protocol

from ultra_signals.core.decision import Side
from ultra_signals.core.events import MarketEvent
from ultra_signals.execution.liquidation import Bracket


class OrderSide(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderKind(StrEnum):
    ENTRY = "entry"
    STOP = "stop"
    TAKE_PROFIT = "tp"
    EXIT = "exit"  # a market reduce-only close (REDUCING, kill switch, reconciliation)


def open_side(side: Side) -> OrderSide:
    return OrderSide.BUY if side is Side.LONG else OrderSide.SELL


def close_side(side: Side) -> OrderSide:
    return OrderSide.SELL if side is Side.LONG else OrderSide.BUY


_KIND_CODE = {OrderKind.ENTRY: "e", OrderKind.STOP: "s", OrderKind.TAKE_PROFIT: "t", OrderKind.EXIT: "x"}
_CODE_KIND = {v: k for k, v in _KIND_CODE.items()}
CLIENT_ID_PREFIX = "us"
#: The reason of an entry REJECTED because its client id was already used: another runner of the namespace (or
#: an earlier run) placed this bar's order.  The exactly-once guard working, not an order error.
DUPLICATE_REASON = "duplicate_client_id"
_CID_RE = re.compile(r"^us([estx])([0-9]?)_([0-9a-f]{30})$")


def client_order_id(order_key: str, kind: OrderKind, attempt: int = 0) -> str:
    """Deterministic id (Binance: at most 36 of ``[.A-Z:/a-z0-9_-]``): a retry never places a second order.

    ``order_key`` is the run-independent decision id (:meth:`Decision.order_key`, ``<namespace>:<symbol>:
    <timeframe>:<bar open ms>``), so every runner and every restart of a namespace derives the same ids for the
    same bar and the venue refuses the second entry.  Trades opened by releases before that hashed the
    run-scoped decision id instead; the format is the same, :func:`trade_order_key` tells them apart.
    ``attempt`` distinguishes a deliberate second order of the same kind (the market fallback after a
    post-only entry timed out); retries of one request always reuse the same attempt number.
    """
    digest = hashlib.sha256(order_key.encode()).hexdigest()[:30]
    return f"{CLIENT_ID_PREFIX}{_KIND_CODE[kind]}{attempt or ''}_{digest}"


def trade_order_key(decision_id: str, namespace: str, stop_cid: str) -> str:
    """The key a journaled trade's client ids derive from: ``<namespace>:<bar key>``, or for a trade opened by an
    earlier release (ids hashed from the run-scoped decision id) the decision id itself.

    The trade row's stop id says which: a restart must find the previous release's orders on the venue again.
    """
    parts = decision_id.split(":")
    if len(parts) >= 3:
        key = f"{namespace}:{':'.join(parts[-3:])}"
        if client_order_id(key, OrderKind.STOP) == stop_cid:
            return key
    return decision_id


def parse_client_id(cid: str) -> tuple[OrderKind, str] | None:
    """``(kind, decision digest)`` of one of our ids, None for anyone else's order (manual, other bots)."""
    m = _CID_RE.match(cid)
    return (_CODE_KIND[m.group(1)], m.group(3)) if m else None


def fmt_decimal(x: Decimal) -> str:
    """Plain notation Binance accepts (``0.00001``, never ``1E-5``)."""
    s = format(x.normalize(), "f")
    return s if s != "-0" else "0"


@dataclass(frozen=True, slots=True)
class EntryPlan:
    """A sized, rounded, gateway-approved entry with its two brackets."""

    decision_id: str
    run_id: str
    symbol: str
    side: Side
    qty: Decimal
    stop: Decimal
    take_profit: Decimal
    arrival_price: float  # market price at the decision: the TCA reference
    ts_ms: int  # event time of the decision
    entry_type: Literal["market", "limit_post_only"] = "market"
    limit_price: Decimal | None = None  # post-only: the touch at the decision
    limit_timeout_ms: int = 30_000
    market_fallback: bool = True
    #: What the client ids derive from: the run-independent ``Decision.order_key`` (empty: the decision id).
    order_key: str = ""

    @property
    def key(self) -> str:
        return self.order_key or self.decision_id

    def cid(self, kind: OrderKind, attempt: int = 0) -> str:
        return client_order_id(self.key, kind, attempt)


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution of one order."""

    client_id: str
    symbol: str
    side: OrderSide
    kind: OrderKind
    qty: float
    price: float
    fee: float  # USDT paid (negative: a maker rebate)
    liquidity: Literal["maker", "taker"]
    ts_ms: int  # event time (paper) or exchange transaction time (binance)
    order_qty: float  # the order's full quantity: fill ratio = cumulative fills / order_qty
    order_ts_ms: int  # when the order became live (decision time for entries, trigger time for brackets)
    reference_price: float  # arrival price (entries) or trigger price (brackets): the slippage reference
    trade_id: str = ""  # venue's execution id: the same fill reported twice is counted once

    @property
    def slippage_bps(self) -> float:
        """Positive when worse than the reference: paid more on a buy, got less on a sell."""
        if self.reference_price <= 0:
            return 0.0
        ref = self.reference_price
        diff = self.price - ref if self.side is OrderSide.BUY else ref - self.price
        return diff / self.reference_price * 10_000.0


@dataclass(frozen=True, slots=True)
class PositionView:
    symbol: str
    qty: float  # signed: > 0 long, < 0 short (one-way mode)
    entry_price: float


@dataclass(frozen=True, slots=True)
class OpenOrderView:
    symbol: str
    client_id: str
    order_type: str  # MARKET, LIMIT, STOP_MARKET, TAKE_PROFIT_MARKET
    side: OrderSide
    qty: float
    price: float
    stop_price: float
    reduce_only: bool


@dataclass(frozen=True, slots=True)
class VenueSnapshot:
    """What the venue says is open: the other half of a reconciliation."""

    positions: list[PositionView]
    open_orders: list[OpenOrderView]


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """The account as the venue reports it (USDT): what sizing and the portfolio limits start from.

    ``wallet_balance`` is realized money only; ``margin_balance`` adds the unrealized PnL of every open
    position (Binance's ``totalMarginBalance``), and ``available_balance`` is what a new position's initial
    margin can still come from.  Sizing from the wallet alone would size a losing account as if it were whole.
    """

    wallet_balance: float
    unrealized_pnl: float
    margin_balance: float
    available_balance: float
    #: Unrealized PnL per symbol with an open position (the venue's mark), until market data brings a price.
    unrealized_by_symbol: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class KillReport:
    cancelled_orders: int = 0
    flattened: list[str] = field(default_factory=list)
    remaining_orders: int = 0
    remaining_positions: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.errors and self.remaining_orders == 0 and self.remaining_positions == 0


@dataclass(frozen=True, slots=True)
class BrokerCapabilities:
    """What a venue does by itself, so the executor asks the broker instead of checking its name.

    Each flag answers one question the executor used to answer with ``broker.name == "paper"`` or a ``getattr``
    probe; a new venue (a testnet, another exchange, a replay of real fills) declares its own answers.
    """

    #: Fills are simulated (what-if): journaled with ``simulated=1`` and reported as such.
    simulated_fills: bool
    #: Positions and orders live on the venue and outlive the process: open trades are recovered from the
    #: journal at start and reconciled with the venue (at start and after reconnects); a run that ends leaves
    #: them open.  False: they die with the run (marked ``open_at_end`` at close).
    positions_outlive_run: bool
    #: The venue reports the account's equity (:meth:`Broker.account_equity` at start, then ``on_equity``);
    #: False: the executor books realized PnL into its own equity.
    reports_equity: bool
    #: The venue publishes its symbols' filters (:meth:`Broker.fetch_exchange_info`).
    provides_exchange_info: bool
    #: ``ultra-signals kill`` from another process reaches the venue; False: only the running executor holds
    #: the positions, so it flattens them itself when it sees the kill switch's state.
    external_kill: bool
    #: Fills, brackets and funding are driven by the market events the executor forwards
    #: (:meth:`Broker.on_market_event`); False: the venue fills on its own and the call is skipped.
    needs_market_events: bool


class BrokerError(RuntimeError):
    """A venue refused or could not be reached; ``code`` is the venue's error code when it gave one."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class BrokerListener(Protocol):
    def on_fill(self, fill: Fill) -> None: ...

    def on_order_update(self, client_id: str, symbol: str, status: str, reason: str | None, ts_ms: int) -> None:
        """NEW / REJECTED / CANCELED / EXPIRED / FILLED / ... of one of our orders."""
        ...

    def on_broker_error(self, kind: str, detail: str, ts_ms: int | None) -> None:
        """A failed request: counted toward the order-errors breaker."""
        ...

    def on_funding(self, symbol: str, amount: float, ts_ms: int) -> None:
        """Funding paid (negative) or received (positive) on an open position."""
        ...

    def on_equity(self, equity: float) -> None: ...

    def on_reconnect(self) -> None:
        """The venue's private stream came back: the executor reconciles."""
        ...


class Broker(Protocol):
    name: str  # journaled with every trade (exec_trades.broker): which venue's books a row belongs to
    capabilities: BrokerCapabilities

    def bind(self, listener: BrokerListener) -> None: ...

    def submit(self, plan: EntryPlan) -> None:
        """Place the entry and, once it fills, its reduce-only stop and take-profit.  Returns at once."""
        ...

    def close_position(self, symbol: str, side: Side, qty: Decimal, order_key: str, ts_ms: int) -> None:
        """Market reduce-only close of a position and cancel of its brackets (the trade's ``order_key``: the
        ids are derived from it).  Returns at once."""
        ...

    def on_market_event(self, ev: MarketEvent) -> None: ...

    async def start(self) -> None: ...

    async def fetch_exchange_info(self) -> dict[str, Any]:
        """The venue's exchangeInfo answer (only when ``capabilities.provides_exchange_info``)."""
        ...

    async def account_equity(self) -> float:
        """The account's equity in USDT (only when ``capabilities.reports_equity``)."""
        ...

    async def account_snapshot(self) -> AccountSnapshot:
        """Wallet, unrealized PnL and available balance (only when ``capabilities.reports_equity``)."""
        ...

    async def leverage_brackets(self) -> dict[str, list[Bracket]]:
        """The venue's maintenance-margin brackets per symbol (empty when it has none: no liquidation check)."""
        ...

    async def recover_missed_fills(self, trades: dict[str, str] | None = None) -> int:
        """Fills that happened while the process was down (``order_key → symbol`` of open trades); how many."""
        ...

    async def snapshot(self) -> VenueSnapshot: ...

    async def kill(self) -> KillReport:
        """Cancel every open order and flatten every position; report what is left."""
        ...

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait until submitted commands have been sent (tests, shutdown)."""
        ...

    async def aclose(self) -> None: ...
