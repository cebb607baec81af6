"""Settings: ``settings.yaml`` as the base, a profile from ``profiles/`` over it, then a secrets file, then env.

Why this shape: operators diff profiles, so profiles hold only what differs; secrets never live in YAML (a
committed file) so the YAML layers refuse them; and every error names the file (or env variable), the dotted
key and the reason, because a trader at 3 a.m. should not have to read a pydantic traceback.

Env overrides use pydantic-settings' nested delimiter: ``ULTRA_SIGNALS_SNIPER__DAILY_SIGNAL_CAP=4``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from ultra_signals.core.timeframes import sort_timeframes, tf_ms

ENV_PREFIX = "ULTRA_SIGNALS_"
#: Env variables with our prefix that steer loading itself rather than name a setting.
CONTROL_ENV = {"ULTRA_SIGNALS_PROFILE", "ULTRA_SIGNALS_SETTINGS", "ULTRA_SIGNALS_SECRETS_FILE"}
PROFILES = ("shadow", "canary", "production-phase1", "production-phase2", "production-phase3", "production-phase4")


class ConfigError(ValueError):
    """A setting is unknown or invalid; the message names where it came from, the key and why."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _split_list(v: Any) -> Any:
    """Env values for lists may be JSON (``["A","B"]``) or plain comma-separated (``A,B``)."""
    if isinstance(v, str):
        s = v.strip()
        if s.startswith("["):
            return yaml.safe_load(s)
        return [p.strip() for p in s.split(",") if p.strip()]
    return v


StrList = Annotated[list[str], NoDecode]


class RuntimeSettings(_Section):
    mode: Literal["shadow", "canary", "live"] = "shadow"
    source: Literal["sim", "replay", "binance"] = "sim"
    symbols: StrList = Field(default_factory=lambda: ["BTCUSDT", "ETHUSDT", "SOLUSDT"])
    timeframes: StrList = Field(default_factory=lambda: ["1m", "5m", "15m", "1h"])
    primary_timeframe: str = "5m"
    #: Signal timeframes that produce candidates (the primary one by default).
    signal_timeframes: StrList = Field(default_factory=list)
    #: Closed bars of each timeframe fed before the run window so indicators are warm at its start.
    warmup_bars: int = Field(default=210, ge=0, le=5000)

    #: ``symbols: all`` — every USDⓈ-M perpetual trading against USDT (Binance source only), resolved at start.
    universe: Literal["list", "all"] = "list"
    #: This runner's share of the symbols, ``"i/n"`` (0-based): n runners with 0/n … n-1/n cover every symbol once.
    shard: str | None = None
    #: With ``symbols: all``: leave out symbols whose 24 h quote volume is below this (0 keeps all).
    min_quote_volume: float = Field(default=0.0, ge=0.0, le=1e13)
    #: With ``symbols: all``: a symbol listed more recently than this takes no new entries.
    min_listing_age_days: float = Field(default=7.0, ge=0.0, le=3650.0)

    _split = field_validator("symbols", "timeframes", "signal_timeframes", mode="before")(_split_list)

    @model_validator(mode="before")
    @classmethod
    def _all_symbols(cls, data: Any) -> Any:
        if isinstance(data, dict):
            v = data.get("symbols")
            if (isinstance(v, str) and v.strip().lower() == "all") or v == ["all"]:
                data = {**data, "symbols": [], "universe": "all"}
        return data

    @field_validator("shard")
    @classmethod
    def _shard(cls, v: str | None) -> str | None:
        if v is not None:
            from ultra_signals.core.universe import Shard

            return str(Shard.parse(v))
        return v

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, v: list[str]) -> list[str]:
        out = []
        for s in v:
            if not s.isalnum() or s.upper() != s:
                raise ValueError(f"symbol {s!r} must be upper-case letters and digits, e.g. BTCUSDT")
            out.append(s)
        return list(dict.fromkeys(out))

    @field_validator("timeframes")
    @classmethod
    def _tfs(cls, v: list[str]) -> list[str]:
        for tf in v:
            tf_ms(tf)
        return sort_timeframes(v)

    @model_validator(mode="after")
    def _primary(self) -> RuntimeSettings:
        if self.universe == "list" and not self.symbols:
            raise ValueError("at least one symbol is required (or symbols: all)")
        tf_ms(self.primary_timeframe)
        if self.primary_timeframe not in self.timeframes:
            raise ValueError(f"primary_timeframe {self.primary_timeframe!r} is not in timeframes {self.timeframes}")
        if not self.signal_timeframes:
            self.signal_timeframes = [self.primary_timeframe]
        for tf in self.signal_timeframes:
            if tf not in self.timeframes:
                raise ValueError(f"signal timeframe {tf!r} is not in timeframes {self.timeframes}")
        return self


class SimSettings(_Section):
    seed: int = 42
    #: Market-time start of the run window (ISO 8601, UTC).  Fixed so a seed reproduces a run exactly.
    start: str = "2026-01-05T00:00:00Z"
    #: Starting prices; a symbol not listed starts at 100.
    start_prices: dict[str, float] = Field(
        default_factory=lambda: {"BTCUSDT": 60000.0, "ETHUSDT": 3000.0, "SOLUSDT": 150.0}
    )
    #: Pairwise return correlation with the first symbol (the market factor).
    correlation: float = Field(default=0.7, ge=0.0, le=0.99)
    #: Baseline per-minute volatility (fraction of price).
    base_vol: float = Field(default=0.0009, gt=0.0, le=0.05)
    #: Probability of a jump in any minute.
    jump_prob: float = Field(default=0.0015, ge=0.0, le=0.1)
    #: Trades and book tickers per 1m bar (0 disables them; klines only).
    ticks_per_bar: int = Field(default=4, ge=0, le=100)


class ReplaySettings(_Section):
    data_dir: str | None = None
    #: Folder of ``<SYMBOL>[-*]-funding.csv`` files replayed as funding events (None: the candle folder).
    funding_dir: str | None = None


class FeatureSettings(_Section):
    #: Bars kept per symbol × timeframe (bounded memory whatever the run length).
    buffer_bars: int = Field(default=500, ge=50, le=100_000)
    ema_fast: int = Field(default=20, ge=2)
    ema_mid: int = Field(default=50, ge=2)
    ema_slow: int = Field(default=200, ge=2)
    rsi_period: int = Field(default=14, ge=2)
    macd_fast: int = Field(default=12, ge=2)
    macd_slow: int = Field(default=26, ge=2)
    macd_signal: int = Field(default=9, ge=2)
    atr_period: int = Field(default=14, ge=2)
    adx_period: int = Field(default=14, ge=2)
    bb_period: int = Field(default=20, ge=2)
    bb_std: float = Field(default=2.0, gt=0.0)
    vwap_band_std: float = Field(default=2.0, gt=0.0)
    volume_z_period: int = Field(default=20, ge=2)


class ScoringSettings(_Section):
    weight_trend: float = Field(default=0.35, ge=0.0)
    weight_momentum: float = Field(default=0.30, ge=0.0)
    weight_volatility: float = Field(default=0.15, ge=0.0)
    weight_volume: float = Field(default=0.20, ge=0.0)
    #: |score| at or above which a side is proposed (a candidate).
    entry_threshold: float = Field(default=0.30, gt=0.0, le=1.0)
    stop_atr_mult: float = Field(default=1.5, gt=0.0)
    target_r: list[float] = Field(default_factory=lambda: [1.0, 2.0, 3.0])

    @model_validator(mode="after")
    def _weights(self) -> ScoringSettings:
        if self.weight_trend + self.weight_momentum + self.weight_volatility + self.weight_volume <= 0:
            raise ValueError("scoring weights must not all be zero")
        if not self.target_r or any(r <= 0 for r in self.target_r):
            raise ValueError("target_r needs at least one positive R multiple")
        return self


class FilterSettings(_Section):
    #: Latest bar of the signal timeframe may lag the market clock by at most this many seconds.
    max_data_age_s: float = Field(default=120.0, gt=0.0)
    #: ATR as a percentage of price must lie in [min_atr_pct, max_atr_pct].
    min_atr_pct: float = Field(default=0.03, ge=0.0)
    max_atr_pct: float = Field(default=3.0, gt=0.0)
    min_adx: float = Field(default=18.0, ge=0.0, le=100.0)
    min_confidence: float = Field(default=0.50, ge=0.0, le=1.0)
    #: Extra filters fed by live microstructure (issue: Binance market data); None disables each.
    max_spread_bps: float | None = None
    min_depth_usdt: float | None = None
    funding_blackout_min: float | None = None
    #: What ``max_spread_bps`` and ``min_depth_usdt`` do for a symbol whose source has sent no book ticker / depth
    #: at all (a candle replay has none): ``refuse`` (the safe live default: unknown is refused) or
    #: ``not_evaluated`` (the candidate passes that filter and the run report counts it as not evaluated).  Data
    #: that was seen but is stale is always refused.  ``near_funding`` without funding data is always "not
    #: evaluated" (it cannot refuse on a time it does not know) and counted the same way.
    unavailable_data: Literal["refuse", "not_evaluated"] = "refuse"

    @model_validator(mode="after")
    def _band(self) -> FilterSettings:
        if self.min_atr_pct >= self.max_atr_pct:
            raise ValueError("min_atr_pct must be below max_atr_pct")
        return self


#: Inputs of the candidate-quality model, in column order (``s`` = +1 long, −1 short); see docs/evaluation.md.
QUALITY_FEATURES = (
    "trend_s",
    "momentum_s",
    "volatility_s",
    "volume_s",
    "abs_score",
    "confidence",
    "adx",
    "atr_pct",
    "htf_trend_s",
    "volume_z",
)


class QualityWeights(_Section):
    """A fitted quality model: ``p = σ(intercept + Σ weights[f] · (x_f − mean[f]) / scale[f])``.

    ``ultra-signals evaluate`` prints the last fold's model in this shape (``final_model``).  The default (all
    empty) gives every candidate the same quality, so ranked selection then admits as first-come does.
    """

    intercept: float = 0.0
    weights: dict[str, float] = Field(default_factory=dict)
    mean: dict[str, float] = Field(default_factory=dict)
    scale: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _names(self) -> QualityWeights:
        for part in ("weights", "mean", "scale"):
            unknown = sorted(set(getattr(self, part)) - set(QUALITY_FEATURES))
            if unknown:
                raise ValueError(f"{part}: unknown feature(s) {unknown}; known: {list(QUALITY_FEATURES)}")
        bad = sorted(k for k, v in self.scale.items() if not v > 0)
        if bad:
            raise ValueError(f"scale must be > 0 for {bad}")
        return self


class SniperSettings(_Section):
    enabled: bool = True
    mtf_confirm: bool = True
    mtf_map: dict[str, str] = Field(default_factory=lambda: {"1m": "5m", "5m": "15m", "15m": "1h", "1h": "4h"})
    max_signals_per_hour: int = Field(default=2, ge=1)
    daily_signal_cap: int = Field(default=6, ge=1)
    per_symbol_max_per_hour: int | None = Field(default=None, ge=1)
    per_symbol_daily_cap: int | None = Field(default=None, ge=1)
    cooldown_bars: int = Field(default=10, ge=0)
    #: How cap slots are spent.  first_come: the first candidates to pass everything take them.  ranked: a
    #: candidate takes a slot only if its quality clears an online threshold sized so that the expected count per
    #: day is ``daily_signal_cap × (1 − budget_reserve)`` (refused ``below_budget_threshold``).  Measured in
    #: docs/evaluation.md: ranked did not beat first_come on the shared data, so first_come is the default.
    selection: Literal["first_come", "ranked"] = "first_come"
    budget_reserve: float = Field(default=0.25, ge=0.0, lt=1.0)
    #: Trailing window (market time) of candidate qualities the ranked threshold is computed from.
    budget_window_hours: float = Field(default=72.0, gt=0.0)
    #: Fewer candidates than this in the window: no threshold yet (first-come).
    budget_min_history: int = Field(default=20, ge=1)
    quality: QualityWeights = Field(default_factory=QualityWeights)
    #: At most this many allowed signals of one direction within ``same_direction_window_min`` (correlated
    #: longs on alts moving together are one bet); None: no bound.  Refused ``same_direction_cap``.
    max_same_direction: int | None = Field(default=None, ge=1)
    same_direction_window_min: float = Field(default=360.0, gt=0.0)

    @field_validator("mtf_map")
    @classmethod
    def _map(cls, v: dict[str, str]) -> dict[str, str]:
        for lo, hi in v.items():
            if tf_ms(hi) <= tf_ms(lo):
                raise ValueError(f"mtf_map {lo}->{hi}: the confirming timeframe must be higher")
        return v

    @model_validator(mode="after")
    def _caps(self) -> SniperSettings:
        if self.max_signals_per_hour > self.daily_signal_cap:
            raise ValueError(
                f"max_signals_per_hour ({self.max_signals_per_hour}) exceeds daily_signal_cap ({self.daily_signal_cap})"
            )
        return self


class RedisSettings(_Section):
    enabled: bool = False
    url: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=6379, ge=1, le=65535)
    db: int = Field(default=0, ge=0)
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    timeout_ms: float = Field(default=50.0, gt=0.0)
    namespace: str = "default"
    on_failure: Literal["memory", "block"] = "memory"
    health_check_interval_s: float = Field(default=1.0, gt=0.0)
    #: CA bundle for TLS to a Redis with a private CA (None: the system store).
    tls_ca_file: str | None = None
    #: Redis Sentinel: ``["host:port", …]``. When set, the counters follow the master Sentinel names
    #: (``sentinel_master``) and reconnect to the new one after a failover; ``url``/``host`` are not used.
    sentinels: StrList = Field(default_factory=list)
    sentinel_master: str = "mymaster"
    #: With ``on_failure: block``: an allowed reservation counts only once this many replicas acknowledged it
    #: (``WAIT``); fewer within ``wait_timeout_ms`` refuses the signal. 0: no WAIT (single node).
    min_replicas_acked: int = Field(default=0, ge=0, le=16)
    wait_timeout_ms: float = Field(default=40.0, gt=0.0, le=10_000.0)

    _split_sentinels = field_validator("sentinels", mode="before")(_split_list)

    @model_validator(mode="after")
    def _wait_within_timeout(self) -> RedisSettings:
        if self.min_replicas_acked and self.wait_timeout_ms >= self.timeout_ms:
            raise ValueError(
                f"wait_timeout_ms ({self.wait_timeout_ms:g}) must be below timeout_ms ({self.timeout_ms:g}): every "
                "Redis call, WAIT included, gives up at timeout_ms"
            )
        return self

    @field_validator("sentinels")
    @classmethod
    def _sentinel_addrs(cls, v: list[str]) -> list[str]:
        for a in v:
            host, sep, port = a.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"sentinel {a!r} must be host:port, e.g. 127.0.0.1:26379")
        return v


class JournalSettings(_Section):
    url: str = "sqlite:///var/journal.db"
    #: Blocked candidates are written in batches of this size; allowed signals are committed at once.
    batch_size: int = Field(default=500, ge=1, le=100_000)


class MetricsSettings(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9108, ge=0, le=65535)


class NotifierSettings(_Section):
    sink: Literal["console", "telegram", "none"] = "console"


EventMode = Literal["on", "silent", "off"]


class TelegramEvents(_Section):
    """Per notice kind: ``on`` (with sound), ``silent`` (no notification sound) or ``off`` (never sent).

    ``blocked`` is never sent card by card: when not ``off``, blocked candidates are summed up in a digest every
    ``telegram.digest_interval_s``.  A kind not listed here (a future one) is ``on``.
    """

    signal: EventMode = "on"
    blocked: EventMode = "off"
    breaker: EventMode = "on"
    fallback: EventMode = "on"
    start: EventMode = "silent"
    stop: EventMode = "silent"
    daily_summary: EventMode = "silent"
    command_reply: EventMode = "on"


class TelegramSettings(_Section):
    api_url: str = "https://api.telegram.org"
    bot_token: SecretStr | None = None
    chat_ids: StrList = Field(default_factory=list)
    allowed_chat_ids: StrList = Field(default_factory=list)
    events: TelegramEvents = Field(default_factory=TelegramEvents)
    #: Wall seconds between digests of blocked candidates (when ``events.blocked`` is not off).
    digest_interval_s: float = Field(default=3600.0, gt=0.0)
    #: Bot API limits: at most one message per chat per this many seconds, per group chat (negative id) per
    #: minute, and overall per second.
    per_chat_interval_s: float = Field(default=1.0, ge=0.0)
    group_per_minute: int = Field(default=20, ge=1)
    global_per_second: int = Field(default=30, ge=1)
    #: One sendMessage may take this long before it counts as a network error and is retried.
    send_timeout_s: float = Field(default=10.0, gt=0.0)
    #: Retry backoff for network errors and 5xx: doubles from the first value up to the second.
    backoff_initial_s: float = Field(default=1.0, gt=0.0)
    backoff_max_s: float = Field(default=60.0, gt=0.0)
    #: Operator commands by long polling (getUpdates); the server holds each poll this long.
    commands: bool = True
    poll_timeout_s: int = Field(default=25, ge=0, le=50)
    #: At shutdown, wait this long for the outbox to drain; what is left is sent after the next start.
    drain_timeout_s: float = Field(default=5.0, ge=0.0)

    _split = field_validator("chat_ids", "allowed_chat_ids", mode="before")(_split_list)

    @model_validator(mode="after")
    def _backoff(self) -> TelegramSettings:
        if self.backoff_initial_s > self.backoff_max_s:
            raise ValueError("backoff_initial_s must not exceed backoff_max_s")
        return self


class BinanceSettings(_Section):
    rest_url: str = "https://fapi.binance.com"
    ws_url: str = "wss://fstream.binance.com"
    testnet: bool = False
    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None
    # -- live market data (sources/binance) --
    #: Base URLs used instead of rest_url / ws_url when ``testnet`` is true (Binance futures demo trading).
    testnet_rest_url: str = "https://demo-fapi.binance.com"
    testnet_ws_url: str = "wss://demo-fstream.binance.com"
    #: Binance's wallet API (``/sapi/v1/account/apiRestrictions``, the key's permissions) lives on the spot host;
    #: it has no testnet twin, so preflight skips that probe on the testnet.
    spot_rest_url: str = "https://api.binance.com"
    #: "split": streams go to ``/market`` (klines, trades, mark price) and ``/public`` (book ticker, depth),
    #: as Binance requires since it retired the single ``/stream`` endpoint (2026-04-23); "legacy": one
    #: ``/stream`` endpoint for everything (old deployments, local fakes).
    ws_routing: Literal["split", "legacy"] = "split"
    max_streams_per_connection: int = Field(default=200, ge=1, le=1024)
    #: A connection that delivers no message for this long is dead (a stall keeps TCP and pings alive).
    silence_timeout_s: float = Field(default=15.0, gt=0.0)
    reconnect_backoff_base_s: float = Field(default=1.0, gt=0.0)
    reconnect_backoff_max_s: float = Field(default=60.0, gt=0.0)
    #: Reconnect on purpose before Binance's 24 h connection limit (new connection first, then close the old).
    planned_reconnect_h: float = Field(default=23.5, gt=0.0, lt=24.0)
    open_timeout_s: float = Field(default=10.0, gt=0.0)
    #: aggTrade (default) or raw trade stream for trade flow.
    trade_stream: Literal["aggTrade", "trade"] = "aggTrade"
    depth_speed: Literal["100ms", "250ms", "500ms", "0ms"] = "100ms"
    depth_snapshot_limit: Literal[5, 10, 20, 50, 100, 500, 1000] = 1000
    #: Order book summary: top-N levels for imbalance, depth within x bps of the mid, emitted at most this often.
    depth_levels: int = Field(default=10, ge=1, le=1000)
    depth_within_bps: float = Field(default=10.0, gt=0.0, le=10_000.0)
    book_summary_interval_ms: int = Field(default=1000, ge=0)
    #: How long to wait for every timeframe closing at the same instant before emitting (then REST fills in).
    close_grace_s: float = Field(default=3.0, gt=0.0)
    rest_timeout_s: float = Field(default=10.0, gt=0.0)
    rest_max_retries: int = Field(default=5, ge=0, le=20)
    #: Pause REST calls when Binance reports this much request weight used in the current minute.
    rest_weight_soft_limit: int = Field(default=1800, ge=1)
    #: Longest Retry-After (429/418) the source will wait out; longer is a clear error.
    rest_max_retry_after_s: float = Field(default=120.0, gt=0.0)


class ThrottleSettings(_Section):
    """Risk gateway limits in front of the broker; a refusal is journaled and counted with its reason."""

    #: Entry requests (each with its two brackets) per trailing minute of market time.
    max_orders_per_minute: int = Field(default=6, ge=1)
    max_notional_per_order: float = Field(default=5_000.0, gt=0.0)
    max_notional_per_symbol: float = Field(default=5_000.0, gt=0.0)
    max_open_positions: int = Field(default=3, ge=1)


class BreakerSettings(_Section):
    """Circuit breakers; a trip moves trading to ``action`` until an operator resumes."""

    action: Literal["reducing", "halted"] = "halted"
    #: Realized loss since the start of the UTC day, as a percentage of that day's starting equity.
    daily_loss_pct: float = Field(default=3.0, gt=0.0, le=100.0)
    consecutive_losses: int = Field(default=4, ge=1)
    order_errors_n: int = Field(default=5, ge=1)
    order_errors_window_s: float = Field(default=300.0, gt=0.0)
    max_data_staleness_s: float = Field(default=120.0, gt=0.0)
    max_latency_p95_ms: float = Field(default=1_000.0, gt=0.0)
    #: Trip when the shared counter backend is lost while the sniper's Redis policy is ``block``.
    counter_lost_under_block: bool = True


class ExecutionSettings(_Section):
    """Sizing, brokers, gateway throttles and circuit breakers (canary and production)."""

    broker: Literal["none", "paper", "binance"] = "paper"
    #: Fraction of equity risked per trade: quantity = equity × risk_fraction / stop distance.
    risk_fraction: float = Field(default=0.005, gt=0.0, le=0.05)
    max_leverage: float = Field(default=5.0, gt=0.0, le=125.0)
    max_notional_usdt: float = Field(default=5_000.0, gt=0.0)
    #: Equity the paper broker starts from (USDT); the binance broker sizes against the account balance.
    paper_equity_usdt: float = Field(default=10_000.0, gt=0.0)
    #: Which of the candidate's targets (1-based) the take-profit bracket uses; clamped to the last one.
    take_profit_target: int = Field(default=1, ge=1)
    fee_taker_bps: float = Field(default=5.0, ge=0.0)
    fee_maker_bps: float = Field(default=2.0, ge=-10.0)
    #: Paper slippage: half the spread (this value when no book ticker was seen) plus a linear size impact.
    slippage_half_spread_bps: float = Field(default=1.0, ge=0.0)
    slippage_impact_bps_per_10k_usdt: float = Field(default=0.5, ge=0.0)
    #: Paper: delay (market time) between a decision and the earliest price that may fill it.
    latency_ms: float = Field(default=50.0, ge=0.0)
    entry_type: Literal["market", "limit_post_only"] = "market"
    #: A post-only entry not filled within this many seconds is cancelled (then sent at market if fallback).
    limit_timeout_s: float = Field(default=30.0, gt=0.0)
    market_fallback: bool = True
    #: Maker-first routing: entries go post-only at the touch whatever ``entry_type`` says.
    maker_first: bool = False
    #: Rollout gate: every fill's |slippage| must stay within this many bps.
    slippage_tolerance_bps: float = Field(default=10.0, gt=0.0)
    #: Rollout gate: a stage run must span at least this many minutes of market time.
    min_run_minutes: float = Field(default=60.0, ge=0.0)
    recv_window_ms: int = Field(default=5_000, ge=1, le=60_000)
    request_timeout_s: float = Field(default=5.0, gt=0.0)
    listen_key_keepalive_s: float = Field(default=1_800.0, gt=0.0)
    #: The server-time offset signed requests use is measured again this often (and on every -1021).
    time_sync_interval_s: float = Field(default=900.0, gt=0.0)
    #: Price that triggers the algo-order brackets: MARK_PRICE resists wicks of the last price (stops),
    #: CONTRACT_PRICE follows the last trade (Binance's default).
    stop_working_type: Literal["MARK_PRICE", "CONTRACT_PRICE"] = "MARK_PRICE"
    take_profit_working_type: Literal["MARK_PRICE", "CONTRACT_PRICE"] = "MARK_PRICE"
    #: Account set-up at start (canary/production): margin type per symbol, leverage = ceil(max_leverage).
    margin_type: Literal["ISOLATED", "CROSSED"] = "ISOLATED"
    #: Multi-Assets mode forbids ISOLATED: refuse to start, or fall back to CROSSED.
    multi_assets_fallback: Literal["refuse", "crossed"] = "refuse"
    #: A stop or take-profit rejected / expired while its position is open: close the position at market
    #: ("flatten") or only halt and alert ("halt": the operator protects it by hand).  Both halt new entries.
    bracket_incident_action: Literal["flatten", "halt"] = "flatten"
    #: The stop must sit at least this fraction of the entry price inside the liquidation price (computed from
    #: Binance's leverage brackets at leverage ceil(max_leverage)); closer is refused.
    min_liquidation_buffer: float = Field(default=0.01, ge=0.0, lt=1.0)
    #: Entry fill to both brackets acknowledged longer than this is an alert (naked position).
    naked_window_alert_ms: float = Field(default=2_000.0, gt=0.0)
    #: A saved exchangeInfo answer (JSON or a recording) for paper sizing without network; None: the binance
    #: broker fetches it, the paper broker on simulated/replayed data rounds to 1e-8 only.
    exchange_info_file: str | None = None
    throttles: ThrottleSettings = Field(default_factory=ThrottleSettings)
    breakers: BreakerSettings = Field(default_factory=BreakerSettings)


class ReportSettings(_Section):
    dir: str = "reports"
    charts: bool = True
    #: Shadow criterion thresholds.
    max_latency_p95_ms: float = 500.0
    max_metrics_gap_s: float = 30.0


class Settings(BaseSettings):
    """The whole effective configuration.  Build it with :func:`load_settings`, not directly."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
        validate_default=True,
    )

    profile: str = "shadow"
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    sim: SimSettings = Field(default_factory=SimSettings)
    replay: ReplaySettings = Field(default_factory=ReplaySettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    scoring: ScoringSettings = Field(default_factory=ScoringSettings)
    filters: FilterSettings = Field(default_factory=FilterSettings)
    sniper: SniperSettings = Field(default_factory=SniperSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    journal: JournalSettings = Field(default_factory=JournalSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    notifier: NotifierSettings = Field(default_factory=NotifierSettings)
    telegram: TelegramSettings = Field(default_factory=TelegramSettings)
    binance: BinanceSettings = Field(default_factory=BinanceSettings)
    execution: ExecutionSettings = Field(default_factory=ExecutionSettings)
    report: ReportSettings = Field(default_factory=ReportSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Highest priority first: explicit init values (CLI flags), env, the secrets file, then the YAML layers
        # (which the loader passes in as init values of lower priority via _YamlLayers).
        layers = _LOADING.get("layers", {})
        secrets_file = _LOADING.get("secrets_file")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if secrets_file:
            sources.append(DotEnvSettingsSource(settings_cls, env_file=secrets_file))
        sources.append(_YamlLayers(settings_cls, layers))
        return tuple(sources)


# Loading state handed to settings_customise_sources (pydantic-settings calls it as a classmethod).
_LOADING: dict[str, Any] = {}

#: Dotted keys whose values are secrets: refused in YAML, redacted wherever settings are shown.
SECRET_KEYS = {"redis.password", "telegram.bot_token", "binance.api_key", "binance.api_secret"}


class _YamlLayers(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for key, value in _flatten(data).items():
        if key in SECRET_KEYS and value not in (None, ""):
            raise ConfigError(
                f"{path}: {key}: secrets may only come from the environment or a secrets file, never from YAML"
            )
    return data


def project_root() -> Path:
    """Folder holding ``settings.yaml`` and ``profiles/``: the working directory, else the source checkout."""
    cwd = Path.cwd()
    if (cwd / "settings.yaml").exists():
        return cwd
    return Path(__file__).resolve().parents[2]


def load_settings(
    profile: str | None = None,
    *,
    settings_file: str | Path | None = None,
    secrets_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge base, profile, secrets file and env into a validated :class:`Settings`.

    ``overrides`` are dotted keys from CLI flags (``{"runtime.symbols": [...]}``) and win over everything.
    """
    env = os.environ if environ is None else environ
    base_path = Path(settings_file or env.get("ULTRA_SIGNALS_SETTINGS") or project_root() / "settings.yaml")
    profile = profile or env.get("ULTRA_SIGNALS_PROFILE") or "shadow"
    prof_path = base_path.parent / "profiles" / f"{profile}.yaml"
    if not base_path.exists():
        raise ConfigError(f"{base_path}: settings file not found")
    if not prof_path.exists():
        known = sorted(p.stem for p in prof_path.parent.glob("*.yaml"))
        raise ConfigError(f"profile {profile!r}: {prof_path} not found (known profiles: {', '.join(known)})")
    base = _read_yaml(base_path)
    prof = _read_yaml(prof_path)
    layers = _deep_merge(_deep_merge(base, prof), {"profile": profile})
    sec = secrets_file or env.get("ULTRA_SIGNALS_SECRETS_FILE")
    if sec and not Path(sec).exists():
        raise ConfigError(f"{sec}: secrets file not found")
    _check_env_names(env)
    init: dict[str, Any] = {}
    for dotted, value in (overrides or {}).items():
        node = init
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    _LOADING.update(layers=layers, secrets_file=str(sec) if sec else None)
    saved_env = None
    if environ is not None:  # tests pass an explicit environment: make pydantic-settings read that one
        saved_env = dict(os.environ)
        for k in [k for k in os.environ if k.upper().startswith(ENV_PREFIX)]:
            del os.environ[k]
        os.environ.update({k: v for k, v in environ.items() if k.upper().startswith(ENV_PREFIX)})
    try:
        # pydantic-settings deep-merges the sources, so a flag on one key leaves the section's other keys to env/YAML.
        return Settings(**init)
    except ValidationError as e:
        raise ConfigError(_explain(e, base_path, prof_path, sec, env, init)) from None
    finally:
        _LOADING.clear()
        if saved_env is not None:
            os.environ.clear()
            os.environ.update(saved_env)


def _check_env_names(env: Mapping[str, str]) -> None:
    """An env variable with our prefix that names no setting is a typo that would silently do nothing."""
    for name in env:
        up = name.upper()
        if not up.startswith(ENV_PREFIX) or up in CONTROL_ENV:
            continue
        parts = up[len(ENV_PREFIX) :].lower().split("__")
        model: type[BaseModel] | None = Settings
        for part in parts:
            fields = model.model_fields if model is not None else {}
            if part not in fields:
                raise ConfigError(f"environment variable {name}: unknown setting {'.'.join(parts)!r}")
            ann = fields[part].annotation
            model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def _explain(
    err: ValidationError,
    base: Path,
    prof: Path,
    secrets: str | Path | None,
    env: Mapping[str, str],
    init: Mapping[str, Any],
) -> str:
    base_keys = _flatten(_read_yaml(base))
    prof_keys = _flatten(_read_yaml(prof))
    init_keys = _flatten(init)
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        env_name = ENV_PREFIX + key.upper().replace(".", "__")
        if key in init_keys:
            where = "command line"
        elif any(n.upper() == env_name for n in env):
            where = f"environment variable {env_name}"
        elif key in prof_keys or any(k.startswith(key + ".") for k in prof_keys):
            where = str(prof)
        elif key in base_keys or any(k.startswith(key + ".") for k in base_keys):
            where = str(base)
        elif secrets:
            where = str(secrets)
        else:
            where = str(base)
        reason = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        shown = "<redacted>" if key in SECRET_KEYS else repr(e.get("input"))
        suffix = "" if e["type"] == "extra_forbidden" else f" (got {shown})"
        lines.append(f"{where}: {key}: {reason}{suffix}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def redacted_dict(settings: Settings) -> dict[str, Any]:
    """Effective settings as plain data with every secret shown as ``***`` (or null when unset)."""
    data = settings.model_dump(mode="python")

    def walk(node: Any, prefix: str) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, f"{prefix}{k}.") for k, v in node.items()}
        key = prefix[:-1]
        if key in SECRET_KEYS:
            return None if node is None else "***"
        if isinstance(node, SecretStr):
            return "***"
        return node

    out: dict[str, Any] = walk(data, "")
    if out.get("redis", {}).get("url"):
        out["redis"]["url"] = redact_url(out["redis"]["url"])
    return out


def redact_url(url: str) -> str:
    """Hide a password embedded in a URL (``redis://:pw@host``)."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0] if ":" in creds else creds
    return f"{scheme}://{user}:***@{host}" if ":" in creds else f"{scheme}://***@{host}"
