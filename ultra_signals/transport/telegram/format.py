"""What the Telegram messages say, as pure functions: HTML escaping, splitting, and the notice texts.

Telegram parses ``parse_mode=HTML`` strictly: one unescaped ``<`` or ``&`` in a symbol list or an error text
makes the whole message fail with a 400, which the sender must then give up on.  So every piece of text is
escaped here and markup is only ever added around escaped text.  Telegram's 4096-character limit counts UTF-16
code units, hence :func:`utf16_len`.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ultra_signals.control.model import (
    BalanceInfo,
    Caps,
    ForceExitResult,
    Health,
    KillResult,
    PauseResult,
    PnlReport,
    Position,
    ResumeResult,
    SignalRow,
    Status,
    StopEntryResult,
    VersionInfo,
)
from ultra_signals.core.decision import Decision
from ultra_signals.core.notices import Notice
from ultra_signals.transport.messages import MODE_PREFIX, fmt_price, plain_text

MAX_MESSAGE = 4096
#: Room kept in every part for the title, the bold prefix and the "(i/n)" tag.
_HEADROOM = 128

TITLES = {
    "blocked_digest": "Blocked candidates",
    "breaker": "Circuit breaker",
    "fallback": "Counter fallback",
    "start": "Started",
    "stop": "Stopped",
    "daily_summary": "Daily summary",
}


def escape(text: str) -> str:
    return html.escape(text, quote=False)


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _cost(text: str) -> int:
    """Length of the escaped text as Telegram counts it (escaping is per character, so cost is additive)."""
    return utf16_len(escape(text))


def _pieces(text: str, limit: int) -> Iterable[str]:
    """Lines, then words of an overlong line, then characters of an overlong word; each fits ``limit``."""
    for line in text.splitlines(keepends=True):
        if _cost(line) <= limit:
            yield line
            continue
        for word in re.split(r"(?<= )", line):
            if _cost(word) <= limit:
                yield word
                continue
            chunk, size = "", 0
            for ch in word:
                c = _cost(ch)
                if size + c > limit:
                    yield chunk
                    chunk, size = "", 0
                chunk += ch
                size += c
            if chunk:
                yield chunk


def split_text(text: str, limit: int = MAX_MESSAGE) -> list[str]:
    """Split plain ``text`` into parts whose escaped length fits ``limit``; ``"".join(parts) == text``.

    Splits at line ends where possible, else at spaces, else anywhere between characters.
    """
    if limit < 6:  # the longest escape, "&amp;", must fit
        raise ValueError("limit must be at least 6")
    parts: list[str] = []
    cur, size = "", 0
    for piece in _pieces(text, limit):
        c = _cost(piece)
        if cur and size + c > limit:
            parts.append(cur)
            cur, size = "", 0
        cur += piece
        size += c
    if cur:
        parts.append(cur)
    return parts


def render(kind: str, text: str, limit: int = MAX_MESSAGE) -> list[str]:
    """The HTML parts of one notice, each at most ``limit`` UTF-16 code units, in order."""
    plain = split_text(text, limit - _HEADROOM) or ["(empty)"]
    parts = [escape(p) for p in plain]
    first_line = parts[0].split("\n", 1)[0]
    if kind in ("signal", "blocked") and " | " in first_line:
        head, rest = parts[0].split(" | ", 1)
        parts[0] = f"<b>{head}</b> | {rest}"
    title = TITLES.get(kind)
    if title:
        parts[0] = f"<b>{escape(title)}</b>\n{parts[0]}"
    n = len(parts)
    if n > 1:
        parts = [f"{p}\n<i>({i}/{n})</i>" for i, p in enumerate(parts, start=1)]
    return parts


# -- notice texts --------------------------------------------------------------------------------------------


def _counts(c: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))) or "none"


def digest_text(mode: str, blocked: Iterable[Decision], period_s: float) -> str:
    """One message summing up the blocked candidates of a period (from the typed decisions, not their cards)."""
    blocked = list(blocked)
    reasons = Counter(d.reason or "unknown" for d in blocked)
    symbols = Counter(d.candidate.symbol for d in blocked)
    minutes = max(1, round(period_s / 60))
    return (
        f"{MODE_PREFIX.get(mode, mode.upper())} | {len(blocked)} blocked in the last {minutes} min\n"
        f"by reason: {_counts(reasons)}\n"
        f"by symbol: {_counts(symbols)}"
    )


def notice_parts(notice: Notice, limit: int = MAX_MESSAGE) -> list[str]:
    """The HTML parts Telegram shows for a notice: its plain text, escaped, titled by kind."""
    return render(notice.kind, plain_text(notice.payload), limit)


# -- operator command replies (renderings of the control layer's typed results) ------------------------------


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, Mapping):
        return ", ".join(f"{k}={_value(x)}" for k, x in v.items()) or "-"
    if isinstance(v, (list, tuple)):
        return ", ".join(_value(x) for x in v) or "-"
    return str(v)


def kv_text(title: str, data: Mapping[str, Any]) -> str:
    """``title`` then one ``key: value`` line per entry (nested mappings inline)."""
    return "\n".join([title, *(f"{k}: {_value(v)}" for k, v in data.items())])


def _age(v: float | None) -> str:
    return "no data yet" if v is None else f"{v:.1f}s"


def status_text(st: Status) -> str:
    data: dict[str, Any] = {}
    run = st.run
    if run is None:
        data["run"] = "no runs in the journal yet"
    else:
        data["mode"] = run.mode
        data["run_id"] = run.run_id
        data["profile"] = run.profile
        data["source"] = run.source + (" (SIMULATED)" if run.simulated else "")
        if run.uptime_s is not None:
            data["uptime"] = f"{run.uptime_s:.0f}s"
        else:
            data["run_status"] = run.status
        data["market_time"] = run.market_time or "-"
        if run.counter_backend is not None:
            data["counter_backend"] = run.counter_backend
        if run.data_age_s:
            data["data_age"] = {k: _age(v) for k, v in run.data_age_s.items()}
    data["paused"] = "yes" if st.paused else "no"
    data["trading"] = st.trading.line
    if st.trips:
        data["breaker_trips"] = [f"{t.breaker} ({t.detail})" for t in st.trips]
    text = kv_text("Status", data)
    return text if st.caps is None else text + "\n" + "\n".join(caps_text(st.caps).splitlines()[1:])


def caps_text(caps: Caps) -> str:
    return "\n".join(
        [
            "Caps (current windows)",
            *(f"{w.name}: count={w.used}, cap={w.cap if w.cap is not None else '?'}" for w in caps.windows),
        ]
    )


def _when(ts: int) -> str:
    return datetime.fromtimestamp(ts / 1000, tz=UTC).strftime("%Y-%m-%d %H:%MZ")


def signals_text(rows: Sequence[SignalRow]) -> str:
    if not rows:
        return "No allowed signals yet."
    lines = [f"Last {len(rows)} allowed signal(s):"]
    for r in rows:
        tp = "/".join(fmt_price(t) for t in r.targets)
        lines.append(f"{_when(r.ts)} {r.symbol} {r.side} ENTRY:{fmt_price(r.entry)} SL:{fmt_price(r.stop)} TP:{tp}")
    return "\n".join(lines)


def positions_text(rows: Sequence[Position]) -> str:
    if not rows:
        return "No open positions."
    lines = [f"{len(rows)} open position(s):"]
    for p in rows:
        entry = fmt_price(p.entry) if p.entry is not None else "pending"
        line = f"{p.symbol} {p.side} qty {p.qty:.8g} ENTRY:{entry} SL:{fmt_price(p.stop)} TP:{fmt_price(p.target)}"
        if p.unrealized is not None and p.mark is not None:
            line += f" | mark {fmt_price(p.mark)} uPnL {p.unrealized:+.2f}"
        lines.append(f"{line} | {p.broker} {p.status} since {_when(p.opened_ts)}")
    return "\n".join(lines)


def pause_text(r: PauseResult) -> str:
    head = "Paused" if r.changed else "Already paused"
    return f"{head}: new signals are blocked (reason: paused) until /resume. The pause survives restarts."


def resume_text(r: ResumeResult) -> str:
    text = f"Resumed: new signals are allowed again; {r.trading}."
    return text + (f"\nNot checked from here: {r.unchecked}." if r.unchecked else "")


def stop_entry_text(r: StopEntryResult) -> str:
    head = "Stop-entry" if r.changed else "Already stopping entries"
    return f"{head}: trading REDUCING, no new entries; open positions keep their stop and target. /resume to undo."


def kill_text(r: KillResult) -> str:
    lines = [f"Kill switch: trading {r.trading.line}"]
    if r.exchange:
        lines.append(
            f"cancelled {r.cancelled_orders} orders; flattened {', '.join(r.flattened) or 'nothing'}; "
            f"left: {r.remaining_orders} orders, {r.remaining_positions} positions"
        )
    else:
        lines.append("paper positions are closed by the runner when it reads the HALT (within 1 s)")
    lines += [f"error: {e}" for e in r.errors]
    return "\n".join(lines)


def _usdt(v: float) -> str:
    return f"{v:+.2f} USDT"


def _wins(trades: int, wins: int) -> str:
    return f"{trades} trade(s), {wins} win(s)" if trades else "no closed trades"


def pnl_text(r: PnlReport, *, daily: bool = False) -> str:
    """/profit: today, since the start and what is open; /daily: one line per day (both from the same report)."""
    if r.run_id is None:
        return "No runs in the journal yet."
    if r.today is None:
        return f"Run {r.run_id}: no market time and no closed trade yet."
    lines = [f"PnL of run {r.run_id} (realised, net of fees and funding; days in UTC market time)"]
    if not daily:
        lines.append(f"today {r.today}: {_usdt(r.realized_today)} ({_wins(r.trades_today, r.wins_today)})")
        lines.append(f"since start: {_usdt(r.realized_total)} ({_wins(r.trades_total, r.wins_total)})")
        lines.append(f"fees paid: {r.fees_total:.2f} USDT")
    if daily or len(r.days) > 1:
        lines += [f"{d.day}: {_usdt(d.realized)} ({_wins(d.trades, d.wins)})" for d in r.days]
    if r.open_positions:
        unreal = "mark unknown" if r.unrealized is None else _usdt(r.unrealized)
        lines.append(f"open: {r.open_positions} position(s), unrealised {unreal} ({r.marked} with a mark)")
    else:
        lines.append("open: no positions")
    return "\n".join(lines)


def balance_text(b: BalanceInfo) -> str:
    line = f"Balance ({b.source}): {b.equity:.2f} {b.asset}"
    if b.start_equity is not None:
        line += f" (started at {b.start_equity:.2f}, {b.equity - b.start_equity:+.2f})"
    return line + (f"\n{b.detail}" if b.detail else "")


def health_text(h: Health) -> str:
    data: dict[str, Any] = {"state": h.state, "trading": h.trading.line, "paused": "yes" if h.paused else "no"}
    if h.run is not None:
        data["run"] = f"{h.run.run_id} ({h.run.status})"
    data["last_event"] = h.last_event or "-"
    if h.data_age_s:
        data["data_age"] = {k: _age(v) for k, v in h.data_age_s.items()}
        if h.max_data_age_s is not None:
            data["data_age_max"] = f"{h.max_data_age_s:g}s"
        data["stale"] = list(h.stale) or "none"
    data["counter_backend"] = h.counter_backend or "unknown here"
    if h.latency_p50_ms is not None and h.latency_p99_ms is not None:
        data["latency"] = f"p50 {h.latency_p50_ms:.1f} ms, p99 {h.latency_p99_ms:.1f} ms"
    data["breaker_trips"] = [f"{t.breaker} ({t.detail})" for t in h.trips] or "none"
    return kv_text("Health", data)


def _flatten(prefix: str, node: Any, out: list[str]) -> None:
    if isinstance(node, Mapping) and node:
        for k, v in node.items():
            _flatten(f"{prefix}{k}.", v, out)
        return
    out.append(f"{prefix[:-1]}: {_value(node) if node not in (None, '') else '-'}")


def config_text(cfg: Mapping[str, Any]) -> str:
    """The redacted settings, one ``section.key: value`` line each (secrets already ``***``)."""
    lines: list[str] = []
    _flatten("", cfg, lines)
    return "\n".join(["Effective settings (secrets hidden)", *lines])


def version_text(v: VersionInfo) -> str:
    return f"ultra-signals {v.version}\ngit: {v.git_commit or 'unknown (not a checkout)'}\npython: {v.python}"


def force_exit_text(r: ForceExitResult) -> str:
    head = f"Force-exit {r.symbol}"
    if r.decision_id:
        head += f" (trade {r.decision_id}, {r.venue or '?'})"
    if r.status == "closed":
        price = f" at {fmt_price(r.exit_price)}" if r.exit_price else ""
        pnl = f", PnL {_usdt(r.pnl)}" if r.pnl is not None else ""
        lines = [f"{head}: closed{price}{pnl}"]
    else:
        lines = [f"{head}: {r.status}; the exit order did not fill yet, check /positions"]
    lines += [f"error: {e}" for e in r.errors]
    return "\n".join(lines)
