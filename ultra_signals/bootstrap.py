"""The one composition root: settings → metrics → journal → source → namespace → notifier → counters → executor → runner.

Every CLI command that runs the pipeline, the benchmarks and the tests build a run here, so there is exactly one
place that decides which namespace a run writes to, which counters it shares, which executor trades for it and
how the notifier hears about counter failovers. Before this module the CLI and ``Runner.__init__`` each wired
half of it and disagreed: the executor was built before the runner had chosen its namespace.

Each piece can be handed in ready-made (tests pass their own source, journal or notifier); whatever is not given
is built from the settings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ultra_signals.core.caps import Reservation, SniperCounters
from ultra_signals.core.config import ConfigError, Settings, redact_url
from ultra_signals.core.notices import CounterEvent, Notice, Notifier
from ultra_signals.journal.writer import Journal, JournalError
from ultra_signals.live.runner import RunNamespace, Runner, RunStats, new_run_id
from ultra_signals.observability.metrics import Metrics
from ultra_signals.sources.base import MarketSource, SourceError, SourceInfo

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from rich.console import Console

    from ultra_signals.control import Control
    from ultra_signals.control.view import RunView
    from ultra_signals.counters.fleet import FleetBeacon
    from ultra_signals.execution.base import Executor
    from ultra_signals.execution.lease import ExecutorLease
    from ultra_signals.web.server import WebServer


class BootstrapError(RuntimeError):
    """A part of the run cannot be built (bad data folder, unreachable journal, Telegram misconfigured…).

    The message names the part and the reason, ready for the operator; the CLI prints it and exits 2.
    """


@dataclass(frozen=True, slots=True)
class SourceRequest:
    """What the command line asks of the market source, on top of the settings."""

    duration_minutes: int | None = None
    data_dir: str | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    symbols_given: bool = True


@dataclass(slots=True)
class CounterEvents:
    """Counter failovers and recoveries, kept for the report and announced through the notifier.

    The counters are built before the runner, so their events cannot go to the runner; they land here, and
    the runner's stats share the same list.
    """

    notifier: Notifier
    mode: str
    log: list[str] = field(default_factory=list)

    def __call__(self, kind: str, text: str) -> None:
        self.log.append(f"{kind}: {text}")
        self.notifier.publish(Notice(CounterEvent(self.mode, kind, text)))


def run_namespace(settings: Settings, info: SourceInfo, run_id: str, given: str | None) -> RunNamespace:
    """Where a run's windows live.

    Historical runs (sim, replay) on the default namespace are their own world: a second replay of the same data
    must not find the first one's signals in its windows. A namespace given on purpose (``--namespace``, or
    ``redis.namespace`` in settings/env) is shared: that is how several runners share one deployment's caps.
    """
    isolated = given is None and info.historical and settings.redis.namespace == "default"
    base = given or (f"default-{run_id}" if isolated else settings.redis.namespace)
    return RunNamespace(base=base, journal=f"{base}:{settings.profile}")


def open_journal(settings: Settings) -> Journal:
    try:
        return Journal(settings.journal.url, settings.journal.batch_size)
    except JournalError as e:
        raise BootstrapError(str(e)) from None


def resolve_symbols(settings: Settings, metrics: Metrics) -> tuple[Settings, list[str]]:
    """Settings whose ``runtime.symbols`` is this runner's concrete list (``symbols: all`` and ``shard`` resolved).

    Returns the settings unchanged when neither is set. The notices say what was resolved.
    """
    rt = settings.runtime
    if rt.universe == "list" and rt.shard is None:
        return settings, []
    import asyncio

    from ultra_signals.sources.universe import Resolved, apply_shard, fetch_universe

    try:
        if rt.universe == "all":
            if rt.source != "binance":
                raise BootstrapError("runtime.symbols: all needs the binance source (sim and replay take a list)")
            resolved = asyncio.run(fetch_universe(settings, metrics))
            # Too young or delisting: not watched this run (no new entries), said in a notice.
            for sym, why in sorted(resolved.no_entries.items()):
                resolved.symbols.remove(sym)
                resolved.notices.append(f"{sym} left out: {why}")
        else:
            resolved = Resolved(list(rt.symbols))
        resolved = apply_shard(resolved, rt.shard)
    except SourceError as e:
        raise BootstrapError(str(e)) from None
    # "resolved": build_runner then refreshes the universe hourly while a live run lasts (wire_universe_refresh).
    universe = "resolved" if rt.universe == "all" else "list"
    runtime = rt.model_copy(update={"symbols": resolved.symbols, "universe": universe})
    return settings.model_copy(update={"runtime": runtime}), resolved.notices


def halt_if_journal_lost(settings: Settings, journal: Journal, historical: bool) -> bool:
    """Canary/production on a LIVE source with a journal this start had to create: trading starts HALTED.

    The journal holds the caps' windows and the trading state (a HALTED breaker survives restarts through it).
    A journal that is missing — deleted, a wrong path, a new volume — would otherwise bring the runner back
    ACTIVE with empty caps.  An operator restores a backup (``ultra-signals db restore``) or resumes on purpose
    (``ultra-signals resume``).  Shadow mode places no orders and is left alone, and so are drills on replayed or
    simulated data (their fills are the paper broker's; a fresh journal is their normal start).
    """
    if not journal.created or settings.runtime.mode == "shadow" or historical:
        return False
    from ultra_signals.execution.breakers import halt_trading

    halt_trading(
        journal,
        "journal_missing",
        "the journal did not exist at start (caps windows and trading state lost?): restore a backup with "
        "`ultra-signals db restore` or run `ultra-signals resume` to trade on an empty journal",
        by="startup",
    )
    log.warning(
        "journal %s was created at start in %s mode: trading HALTED", redact_url(journal.url), settings.runtime.mode
    )
    return True


def mark_crashed(journal: Journal) -> list[dict[str, object]]:
    """Runs a SIGKILLed (or OOM-killed) process left ``running`` become ``crashed`` before a new run starts."""
    try:
        return journal.mark_crashed_runs()
    except Exception as e:  # never block a start on this housekeeping; the operator sees why
        log.warning("could not check the journal for crashed runs: %s", e)
        return []


def build_source(settings: Settings, metrics: Metrics, request: SourceRequest) -> MarketSource:
    from ultra_signals.sources import factory

    try:
        return factory.build_source(
            settings,
            metrics,
            duration_minutes=request.duration_minutes,
            data_dir=request.data_dir,
            start_ms=request.start_ms,
            end_ms=request.end_ms,
            symbols_given=request.symbols_given,
        )
    except (SourceError, OSError, ValueError) as e:
        raise BootstrapError(str(e)) from None


def build_notifier(settings: Settings, metrics: Metrics, journal: Journal, console: Console | None = None) -> Notifier:
    from ultra_signals.transport.notifier import ConsoleNotifier, NullNotifier

    sink = settings.notifier.sink
    if sink == "telegram":
        from ultra_signals.transport.telegram.notifier import make_telegram_notifier

        try:
            return make_telegram_notifier(settings, metrics, journal.engine, settings.runtime.mode)
        except ConfigError as e:
            raise BootstrapError(str(e)) from None
    if sink == "none":
        return NullNotifier()
    if console is None:
        from rich.console import Console

        console = Console(highlight=False)
    return ConsoleNotifier(console)


def build_executor(
    settings: Settings, metrics: Metrics, journal: Journal, notifier: Notifier, run_id: str, namespace: RunNamespace
) -> Executor | None:
    if settings.execution.broker == "none":
        return None
    from ultra_signals.execution.executor import make_executor

    return make_executor(settings, metrics, journal, notifier, run_id, namespace=namespace.base)


def build_beacon(settings: Settings, ns: RunNamespace) -> FleetBeacon | None:
    """With Redis on, every runner beats into the namespace's fleet hash (``ultra-signals status --fleet``)."""
    if not settings.redis.enabled:
        return None
    from ultra_signals.counters.fleet import FleetBeacon
    from ultra_signals.counters.redis_backend import connect

    return FleetBeacon(connect(settings.redis), ns.base, settings.profile)


def build_lease(settings: Settings, exe: Executor | None, run_id: str, ns: RunNamespace) -> ExecutorLease | None:
    """A real account (binance broker) shared through Redis gets a lease: one executor trades it at a time.

    The executor refuses entries (``no_executor_lease``) until the runner's refresh loop has taken the lease and
    reconciled; paper brokers trade nobody's account and run without one.
    """
    if exe is None or not settings.redis.enabled or settings.execution.broker != "binance":
        return None
    if not hasattr(exe, "lease_gate"):
        return None
    broker = getattr(exe, "broker", None)
    if getattr(broker, "name", None) != "binance":  # replayed/simulated data trade the paper broker: no account
        return None
    from ultra_signals.counters.redis_backend import connect
    from ultra_signals.execution.lease import ExecutorLease

    lease = ExecutorLease(
        connect(settings.redis),
        namespace=ns.base,
        account=f"binance{'-testnet' if settings.binance.testnet else ''}",
        holder=run_id,
        ttl_ms=int(settings.execution.lease_ttl_s * 1000),
    )
    exe.lease_gate = lease.blocking_reason
    return lease


# -- listings and delistings at runtime (runtime.symbols: all, live) -------------------------------------------
def wire_universe_refresh(settings: Settings, runner: Runner, metrics: Metrics) -> None:
    """A live run whose symbols came from ``all`` re-reads exchangeInfo every ``runtime.universe_refresh_s`` (wall
    clock): the engine gets the entry gate as a filter right after the trading state, and the refresh runs as
    one of the runner's background tasks.  Replays have a fixed recorded universe: nothing to refresh."""
    rt = settings.runtime
    if rt.universe != "resolved" or runner.source.info.historical or rt.universe_refresh_s <= 0:
        return
    from ultra_signals.core.universe import EntryGate, EntryGateFilter
    from ultra_signals.execution.listing import ListingWatch
    from ultra_signals.sources.universe import UniverseRefresher

    gate = EntryGate()
    at = next((i + 1 for i, f in enumerate(runner.engine.filters) if f.name == "trading_halted"), 0)
    runner.engine.filters.insert(at, EntryGateFilter(gate))
    runner.feed_exempt = gate.blocked  # a delisted contract's silent feed must not trip the staleness breaker
    watch = ListingWatch(gate, runner.executor, runner.notifier, mode=rt.mode, run_id=runner.run_id)
    refresher = UniverseRefresher(
        settings, metrics, watched=list(rt.symbols), gate=gate, on_change=watch, held=watch.held
    )
    runner.background.append(refresher.run)


# -- account-wide delivery (execution.delivery: stream) ------------------------------------------------------
def account_name(settings: Settings) -> str:
    """The account a lease and an inbox belong to: the venue (and testnet), or the namespace's paper account."""
    if settings.execution.broker == "binance" and settings.runtime.source == "binance":
        return f"binance{'-testnet' if settings.binance.testnet else ''}"
    return "paper"


def build_delivery(
    settings: Settings, exe: Executor | None, run_id: str, ns: RunNamespace, notifier: Notifier, metrics: Metrics
) -> tuple[Executor | None, ExecutorLease | None]:
    """``execution.delivery: stream``: wrap the executor so allowed decisions go to the account's inbox and only
    the lease holder runs them (``execution/inbox.py``).  Whatever the broker, the lease is what makes one
    executor per account; the runner's refresh loop takes and renews it as for ``direct``."""
    if exe is None or settings.execution.delivery != "stream":
        return exe, None
    if not settings.redis.enabled:
        raise BootstrapError(
            "execution.delivery: stream needs Redis (redis.enabled: true): the inbox is a Redis Stream"
        )
    if not hasattr(exe, "lease_gate"):
        raise BootstrapError("execution.delivery: stream needs a trading executor (execution.broker paper or binance)")
    from ultra_signals.counters.redis_backend import connect
    from ultra_signals.execution.inbox import DecisionInbox, InboxExecutor
    from ultra_signals.execution.lease import ExecutorLease

    account = account_name(settings)
    client = connect(settings.redis)
    # A blocking XREADGROUP outlasts the call timeout of the decision path: its own connection, longer timeout.
    reader_settings = settings.redis.model_copy(update={"timeout_ms": settings.redis.timeout_ms + 1_000.0})
    inbox = DecisionInbox(
        client,
        namespace=ns.base,
        account=account,
        reader=connect(reader_settings),
        min_replicas_acked=settings.redis.min_replicas_acked,
        wait_timeout_ms=settings.redis.wait_timeout_ms,
    )
    lease = ExecutorLease(
        client, namespace=ns.base, account=account, holder=run_id, ttl_ms=int(settings.execution.lease_ttl_s * 1000)
    )
    exe.lease_gate = lease.blocking_reason
    wrapped = InboxExecutor(
        exe,
        inbox,
        lease,
        notifier=notifier,
        mode=settings.runtime.mode,
        on_error=lambda kind: metrics.errors.labels(kind=kind).inc(),
    )
    return wrapped, lease


def build_runner(
    settings: Settings,
    *,
    source: MarketSource | None = None,
    source_request: SourceRequest | None = None,
    journal: Journal | None = None,
    notifier: Notifier | None = None,
    metrics: Metrics | None = None,
    counters: SniperCounters | None = None,
    executor: Executor | bool | None = True,
    run_id: str | None = None,
    namespace: str | None = None,
    decisions_out: str | Path | None = None,
    overwrite: bool = False,
    speed: float | None = None,
    pace_from: float | None = None,
    serve_metrics: bool = True,
    serve_web: bool | None = None,
    on_progress: Callable[[RunStats, int], None] | None = None,
    console: Console | None = None,
    tune_gc: bool = False,
) -> Runner:
    """A runner wired from the settings, with whatever parts the caller already holds.

    ``executor``: True builds the one the settings ask for (none when ``execution.broker`` is ``none``), False or
    None runs without one, an instance is used as given.  ``serve_web``: the status page when ``web.enabled``
    (None: as ``serve_metrics``, so a caller that asked for no exporter opens no port at all).  ``tune_gc``: the
    run takes over the process's garbage collector (``observability/gc_pauses.py``): for a process that runs one
    runner (the CLI), not for a caller holding several.
    """
    from ultra_signals.counters.factory import make_counters

    if decisions_out is not None and Path(decisions_out).exists() and not overwrite:
        raise BootstrapError(
            f"--decisions-out {decisions_out} already exists (a previous run's decisions); "
            "choose another file or pass --force to overwrite it"
        )
    metrics = metrics or Metrics()
    journal = journal or open_journal(settings)
    crashed = mark_crashed(journal)
    source = source or build_source(settings, metrics, source_request or SourceRequest())
    halt_if_journal_lost(settings, journal, source.info.historical)
    run_id = run_id or new_run_id()
    ns = run_namespace(settings, source.info, run_id, namespace)
    notifier = notifier or build_notifier(settings, metrics, journal, console)
    for c in crashed:
        notifier.publish(
            Notice.plain(
                "fallback",
                f"{settings.runtime.mode.upper()} | run {c['run_id']} was left running by a process "
                f"that is gone: marked crashed (last decision at {c['last_decision_ts']})",
            )
        )
    events = CounterEvents(notifier, settings.runtime.mode)
    restored: list[Reservation] = list(journal.allowed_reservations(ns.journal))
    if counters is None:
        counters = make_counters(settings, metrics, namespace=ns.base, seed=restored, on_event=events)
    else:
        counters.seed(restored)
    exe: Executor | None
    if executor is True:
        exe = build_executor(settings, metrics, journal, notifier, run_id, ns)
    elif executor is False or executor is None:
        exe = None
    else:
        exe = executor
    exe, lease = build_delivery(settings, exe, run_id, ns, notifier, metrics)
    if lease is None:
        lease = build_lease(settings, exe, run_id, ns)
    beacon = build_beacon(settings, ns)
    gc_control = None
    if tune_gc:
        from ultra_signals.observability.gc_pauses import GcControl

        gc_control = GcControl(live=not source.info.historical, pauses=metrics.gc_pause)
    runner = Runner(
        settings,
        source,
        journal=journal,
        notifier=notifier,
        metrics=metrics,
        counters=counters,
        namespace=ns,
        restored=restored,
        counter_events=events.log,
        executor=exe,
        run_id=run_id,
        decisions_out=decisions_out,
        speed=speed,
        pace_from=pace_from,
        serve_metrics=serve_metrics,
        on_progress=on_progress,
        lease=lease,
        beacon=beacon,
        gc_control=gc_control,
    )
    wire_universe_refresh(settings, runner, metrics)
    attach = getattr(notifier, "attach_commands", None)
    if attach is not None:  # Telegram answers operator commands from this run, through the control layer
        from ultra_signals.live.view import RunnerView

        attach(build_control(settings, journal, RunnerView(runner), runner, exe))
    if (serve_metrics if serve_web is None else serve_web) and settings.web.enabled:
        runner.web = build_web(settings, journal, runner, exe)
    return runner


def build_control(settings: Settings, journal: Journal, view: RunView, runner: Runner, exe: Executor | None) -> Control:
    """The operator actions over this run, the same for Telegram and the web page: the exchange's flatten for a
    kill, and the executor's close and balance when this run trades (force-exit, /balance)."""
    from ultra_signals.control import Control
    from ultra_signals.control.exits import executor_balance, executor_closer
    from ultra_signals.control.kill import exchange_flattener
    from ultra_signals.execution.executor import TradingExecutor

    trading = exe if isinstance(exe, TradingExecutor) else None
    return Control(
        journal,
        view,
        flatten=exchange_flattener(settings),
        close=executor_closer(trading, runner.clock.now_ms) if trading is not None else None,
        balance=executor_balance(trading) if trading is not None else None,
        settings=settings,
    )


def build_web(settings: Settings, journal: Journal, runner: Runner, exe: Executor | None = None) -> WebServer:
    """The status page and API over this run, through the same control layer as the CLI and Telegram.

    Only the server module is imported here; FastAPI and uvicorn load when it starts.
    """
    from ultra_signals.live.view import RunnerView
    from ultra_signals.web.server import WebServer

    view = RunnerView(runner)
    return WebServer(build_control(settings, journal, view, runner, exe), settings, probe=view)
