"""Settings: ``settings.yaml`` as the base, a profile from ``profiles/`` over it, then a secrets file, then env.

Why this shape: operators diff profiles, so profiles hold only what differs; secrets never live in YAML (a
committed file) so the YAML layers refuse them; and every error names the file (or env variable), the dotted
key and the reason, because a trader at 3 a.m. should not have to read a pydantic traceback.

Env overrides name a setting with ``__`` between levels: ``ULTRA_SIGNALS_SNIPER__DAILY_SIGNAL_CAP=4``.

The loader is a pure function of its inputs (files and the ``env`` mapping it is given): it reads no global
state besides the files, and changes none (no ``os.environ`` edits), so tests and several runners in one
process can load different settings side by side.  Every input it refuses gets one line naming the file and
line, or the environment variable, the dotted key and why -- never a traceback, never a hang: YAML aliases,
nesting beyond a few levels, duplicate keys, binary or UTF-16 files, non-finite or absurd numbers and
timeframes Binance does not offer are all refused.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

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

from ultra_signals.core.redaction import redact, url_has_credentials, url_password
from ultra_signals.core.redaction import redact_url as redact_url
from ultra_signals.core.timeframes import check_exchange_timeframe, sort_timeframes, tf_ms

ENV_PREFIX = "ULTRA_SIGNALS_"
#: Env variables with our prefix that steer loading itself rather than name a setting.
CONTROL_ENV = {"ULTRA_SIGNALS_PROFILE", "ULTRA_SIGNALS_SETTINGS", "ULTRA_SIGNALS_SECRETS_FILE"}
#: The shipped profiles in rollout order (shadow, then canary, then the production phases).  The one list of
#: them: ``apps/rollout.py`` gates each step from one to the next, tests load each one.
STAGES = ("shadow", "canary", "production-phase1", "production-phase2", "production-phase3", "production-phase4")


class ConfigError(ValueError):
    """A setting is unknown or invalid; the message names where it came from, the key and why."""


class _Section(BaseModel):
    # allow_inf_nan=False: ``.inf`` / ``.nan`` in YAML and ``nan`` in env are refused by every float field.
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


class _Raw:
    """Marks a list field whose env value is split by its own validator (JSON list or comma-separated)."""


def _split_list(v: Any) -> Any:
    """Env values for lists may be JSON (``["A","B"]``) or plain comma-separated (``A,B``)."""
    if isinstance(v, str):
        s = v.strip()
        if s.startswith("["):
            try:
                return json.loads(s)
            except (ValueError, RecursionError):
                raise ValueError('not a valid JSON list (write A,B or ["A","B"])') from None
        return [p.strip() for p in s.split(",") if p.strip()]
    return v


StrList = Annotated[list[str], _Raw()]
FloatList = Annotated[list[float], _Raw()]
#: Upper bounds: a setting far outside what any deployment uses is a typo (1e29 for a cap), refused at load.
MAX_CAP = 10_000
MAX_PERIOD = 5_000
MAX_S = 7 * 86_400.0  # a week, for any duration in seconds
MAX_USDT = 1e12
MAX_BPS = 10_000.0


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
    #: ``resolved``: the list was resolved from ``all`` at start (the live refresh then watches the exchange).
    universe: Literal["list", "all", "resolved"] = "list"
    #: This runner's share of the symbols, ``"i/n"`` (0-based): n runners with 0/n … n-1/n cover every symbol once.
    shard: str | None = None
    #: With ``symbols: all``: leave out symbols whose 24 h quote volume is below this (0 keeps all).
    min_quote_volume: float = Field(default=0.0, ge=0.0, le=1e13)
    #: With ``symbols: all``: a symbol listed more recently than this takes no new entries.
    min_listing_age_days: float = Field(default=7.0, ge=0.0, le=3650.0)
    #: With ``symbols: all`` on a live source: read exchangeInfo again this often (wall clock) to stop entries on a
    #: contract whose delisting is announced and alert on a delisted one still held.  0: never (start only).
    universe_refresh_s: float = Field(default=3600.0, ge=0.0, le=MAX_S)

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
        if not v:
            raise ValueError("at least one timeframe is required")
        for tf in v:
            check_exchange_timeframe(tf)
        return sort_timeframes(v)

    @field_validator("primary_timeframe")
    @classmethod
    def _primary_tf(cls, v: str) -> str:
        return check_exchange_timeframe(v)

    @field_validator("signal_timeframes")
    @classmethod
    def _signal_tfs(cls, v: list[str]) -> list[str]:
        for tf in v:
            check_exchange_timeframe(tf)
        return v

    @model_validator(mode="after")
    def _primary(self) -> RuntimeSettings:
        if self.universe == "list" and not self.symbols:
            raise ValueError("at least one symbol is required (or symbols: all)")
        if self.primary_timeframe not in self.timeframes:
            raise ValueError(f"primary_timeframe {self.primary_timeframe!r} is not in timeframes {self.timeframes}")
        if not self.signal_timeframes:
            self.signal_timeframes = [self.primary_timeframe]
        for tf in self.signal_timeframes:
            if tf not in self.timeframes:
                raise ValueError(f"signal timeframe {tf!r} is not in timeframes {self.timeframes}")
        return self


class SimSettings(_Section):
    seed: int = Field(default=42, ge=0, le=2**63 - 1)
    #: Market-time start of the run window (ISO 8601, UTC).  Fixed so a seed reproduces a run exactly.
    start: str = "2026-01-05T00:00:00Z"
    #: Starting prices; a symbol not listed starts at 100.
    start_prices: dict[str, Annotated[float, Field(gt=0.0, le=1e9)]] = Field(
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

    @field_validator("start")
    @classmethod
    def _start(cls, v: str) -> str:
        try:
            datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("not an ISO 8601 time such as 2026-01-05T00:00:00Z") from None
        return v


class ReplaySettings(_Section):
    data_dir: str | None = None
    #: Folder of ``<SYMBOL>[-*]-funding.csv`` files replayed as funding events (None: the candle folder).
    funding_dir: str | None = None


class FeatureSettings(_Section):
    #: Bars kept per symbol × timeframe (bounded memory whatever the run length).
    buffer_bars: int = Field(default=500, ge=50, le=100_000)
    ema_fast: int = Field(default=20, ge=2, le=MAX_PERIOD)
    ema_mid: int = Field(default=50, ge=2, le=MAX_PERIOD)
    ema_slow: int = Field(default=200, ge=2, le=MAX_PERIOD)
    rsi_period: int = Field(default=14, ge=2, le=MAX_PERIOD)
    macd_fast: int = Field(default=12, ge=2, le=MAX_PERIOD)
    macd_slow: int = Field(default=26, ge=2, le=MAX_PERIOD)
    macd_signal: int = Field(default=9, ge=2, le=MAX_PERIOD)
    atr_period: int = Field(default=14, ge=2, le=MAX_PERIOD)
    adx_period: int = Field(default=14, ge=2, le=MAX_PERIOD)
    bb_period: int = Field(default=20, ge=2, le=MAX_PERIOD)
    bb_std: float = Field(default=2.0, gt=0.0, le=10.0)
    vwap_band_std: float = Field(default=2.0, gt=0.0, le=10.0)
    volume_z_period: int = Field(default=20, ge=2, le=MAX_PERIOD)

    @model_validator(mode="after")
    def _macd(self) -> FeatureSettings:
        if self.macd_fast >= self.macd_slow:
            raise ValueError(f"macd_fast ({self.macd_fast}) must be below macd_slow ({self.macd_slow})")
        return self


class ScoringSettings(_Section):
    weight_trend: float = Field(default=0.35, ge=0.0, le=100.0)
    weight_momentum: float = Field(default=0.30, ge=0.0, le=100.0)
    weight_volatility: float = Field(default=0.15, ge=0.0, le=100.0)
    weight_volume: float = Field(default=0.20, ge=0.0, le=100.0)
    #: |score| at or above which a side is proposed (a candidate).
    entry_threshold: float = Field(default=0.30, gt=0.0, le=1.0)
    stop_atr_mult: float = Field(default=1.5, gt=0.0, le=100.0)
    #: Targets in R multiples of the stop distance; env: ``1,2,3`` or ``[1,2,3]``.
    target_r: FloatList = Field(default_factory=lambda: [1.0, 2.0, 3.0], max_length=10)

    _split = field_validator("target_r", mode="before")(_split_list)

    @model_validator(mode="after")
    def _weights(self) -> ScoringSettings:
        if self.weight_trend + self.weight_momentum + self.weight_volatility + self.weight_volume <= 0:
            raise ValueError("scoring weights must not all be zero")
        if not self.target_r or any(not 0 < r <= 100 for r in self.target_r):
            raise ValueError("target_r needs at least one R multiple, each in (0, 100]")
        return self


class FilterSettings(_Section):
    #: Latest bar of the signal timeframe may lag the market clock by at most this many seconds.
    max_data_age_s: float = Field(default=120.0, gt=0.0, le=MAX_S)
    #: ATR as a percentage of price must lie in [min_atr_pct, max_atr_pct].
    min_atr_pct: float = Field(default=0.03, ge=0.0, le=100.0)
    max_atr_pct: float = Field(default=3.0, gt=0.0, le=100.0)
    min_adx: float = Field(default=18.0, ge=0.0, le=100.0)
    min_confidence: float = Field(default=0.50, ge=0.0, le=1.0)
    #: Extra filters fed by live microstructure (issue: Binance market data); None disables each.
    max_spread_bps: float | None = Field(default=None, gt=0.0, le=MAX_BPS)
    min_depth_usdt: float | None = Field(default=None, ge=0.0, le=MAX_USDT)
    funding_blackout_min: float | None = Field(default=None, ge=0.0, le=480.0)
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
    max_signals_per_hour: int = Field(default=2, ge=1, le=MAX_CAP)
    daily_signal_cap: int = Field(default=6, ge=1, le=MAX_CAP)
    per_symbol_max_per_hour: int | None = Field(default=None, ge=1, le=MAX_CAP)
    per_symbol_daily_cap: int | None = Field(default=None, ge=1, le=MAX_CAP)
    cooldown_bars: int = Field(default=10, ge=0, le=MAX_CAP)
    #: How cap slots are spent.  first_come: the first candidates to pass everything take them.  ranked: a
    #: candidate takes a slot only if its quality clears an online threshold sized so that the expected count per
    #: day is ``daily_signal_cap × (1 − budget_reserve)`` (refused ``below_budget_threshold``).  Measured in
    #: docs/evaluation.md: ranked did not beat first_come on the shared data, so first_come is the default.
    selection: Literal["first_come", "ranked"] = "first_come"
    budget_reserve: float = Field(default=0.25, ge=0.0, lt=1.0)
    #: Trailing window (market time) of candidate qualities the ranked threshold is computed from.
    budget_window_hours: float = Field(default=72.0, gt=0.0, le=MAX_S / 3600.0)
    #: Fewer candidates than this in the window: no threshold yet (first-come).
    budget_min_history: int = Field(default=20, ge=1, le=100_000)
    quality: QualityWeights = Field(default_factory=QualityWeights)
    #: At most this many allowed signals of one direction within ``same_direction_window_min`` (correlated
    #: longs on alts moving together are one bet); None: no bound.  Refused ``same_direction_cap``.
    max_same_direction: int | None = Field(default=None, ge=1, le=MAX_CAP)
    same_direction_window_min: float = Field(default=360.0, gt=0.0, le=MAX_S / 60.0)

    @field_validator("mtf_map")
    @classmethod
    def _map(cls, v: dict[str, str]) -> dict[str, str]:
        for lo, hi in v.items():
            check_exchange_timeframe(lo)
            check_exchange_timeframe(hi)
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
    db: int = Field(default=0, ge=0, le=MAX_CAP)
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    #: Socket timeout of every Redis call.  Bounded: a Redis call on the decision path can hold a decision this
    #: long (the periodic refresh makes none); 5 s is an outage, not a slow call (the Sentinel fail-over replays
    #: need that much while a new primary is elected).
    timeout_ms: float = Field(default=50.0, gt=0.0, le=5_000.0)
    namespace: str = Field(default="default", min_length=1, max_length=200)
    on_failure: Literal["memory", "block"] = "memory"
    health_check_interval_s: float = Field(default=1.0, gt=0.0, le=3_600.0)
    #: Leave Redis only on evidence: this many consecutive failed calls (or one failed health check).  A single
    #: slow answer under CPU load is counted (``sniper_counter_slow_answers_total``), not a failover.
    failover_after_failures: int = Field(default=3, ge=1, le=1000)
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
    #: The runner scrapes its own exporter over HTTP this often (wall seconds; 0: never), at start and at the end:
    #: evidence that the exporter serves even when no Prometheus is scraping.  The report says which scrapes were
    #: the runner's own and which came from outside.
    self_scrape_s: float = Field(default=10.0, ge=0.0, le=3_600.0)


LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


class WebSettings(_Section):
    """The status page and REST API the runner serves (``ultra_signals/web``, docs/web.md).

    Bound to loopback by default; to reach it from a phone, put a TLS reverse proxy in front (docs/web.md) and set
    ``read_token``.  The tokens are secrets: only from the environment (``ULTRA_SIGNALS_WEB__READ_TOKEN``,
    ``ULTRA_SIGNALS_WEB__WRITE_TOKEN``) or a secrets file, never YAML.  Without ``write_token`` every control
    action is refused; without ``read_token`` reads are answered to loopback clients only, and a host that is not
    loopback is refused at start.
    """

    enabled: bool = False
    host: str = "127.0.0.1"
    #: 0 picks a free port (printed at start, like the metrics port).
    port: int = Field(default=8108, ge=0, le=65535)
    read_token: SecretStr | None = None
    write_token: SecretStr | None = None
    #: Per-client token buckets: control actions (and refused token attempts) and reads.
    write_burst: int = Field(default=5, ge=1, le=1_000)
    write_per_minute: float = Field(default=10.0, gt=0.0, le=6_000.0)
    read_burst: int = Field(default=120, ge=1, le=100_000)
    read_per_minute: float = Field(default=600.0, gt=0.0, le=600_000.0)
    #: The page refreshes this often (wall seconds).
    refresh_s: float = Field(default=2.0, ge=0.5, le=600.0)

    @field_validator("read_token", "write_token")
    @classmethod
    def _token_strength(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and v.get_secret_value() and len(v.get_secret_value()) < 16:
            raise ValueError("a web token must be at least 16 characters (e.g. `openssl rand -hex 24`)")
        return None if v is None or not v.get_secret_value() else v

    @model_validator(mode="after")
    def _tokens_differ(self) -> WebSettings:
        r, w = self.read_token, self.write_token
        if r is not None and w is not None and r.get_secret_value() == w.get_secret_value():
            raise ValueError("web.read_token and web.write_token must differ (a reader must not be able to act)")
        if self.enabled and not self.loopback and r is None:
            raise ValueError(
                f"web.host {self.host!r} is not loopback and web.read_token is not set: the status page would be "
                "open to anyone who can reach the host. Keep 127.0.0.1 and put a TLS reverse proxy in front "
                "(docs/web.md), or set ULTRA_SIGNALS_WEB__READ_TOKEN"
            )
        return self

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS or self.host.startswith("127.")


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
    #: Telegram user ids (``message.from.id``) allowed to change anything (pause, resume, stop-entry, force-exit,
    #: kill), in addition to the chat being allowed: group membership is not authentication.  Required in canary
    #: and live for /resume, /stopentry, /forceexit and /kill (refused while empty).
    allowed_users: StrList = Field(default_factory=list)
    events: TelegramEvents = Field(default_factory=TelegramEvents)
    #: Wall seconds between digests of blocked candidates (when ``events.blocked`` is not off).
    digest_interval_s: float = Field(default=3600.0, gt=0.0, le=MAX_S)
    #: Bot API limits: at most one message per chat per this many seconds, per group chat (negative id) per
    #: minute, and overall per second.
    per_chat_interval_s: float = Field(default=1.0, ge=0.0, le=3_600.0)
    group_per_minute: int = Field(default=20, ge=1, le=MAX_CAP)
    global_per_second: int = Field(default=30, ge=1, le=MAX_CAP)
    #: One sendMessage may take this long before it counts as a network error and is retried.
    send_timeout_s: float = Field(default=10.0, gt=0.0, le=600.0)
    #: Retry backoff for network errors and 5xx: doubles from the first value up to the second.
    backoff_initial_s: float = Field(default=1.0, gt=0.0, le=3_600.0)
    backoff_max_s: float = Field(default=60.0, gt=0.0, le=86_400.0)
    #: Operator commands by long polling (getUpdates); the server holds each poll this long.
    commands: bool = True
    poll_timeout_s: int = Field(default=25, ge=0, le=50)
    #: At shutdown, wait this long for the outbox to drain; what is left is sent after the next start.
    drain_timeout_s: float = Field(default=5.0, ge=0.0, le=600.0)

    _split = field_validator("chat_ids", "allowed_chat_ids", "allowed_users", mode="before")(_split_list)

    @model_validator(mode="after")
    def _backoff(self) -> TelegramSettings:
        if self.backoff_initial_s > self.backoff_max_s:
            raise ValueError("backoff_initial_s must not exceed backoff_max_s")
        return self

    @field_validator("allowed_users", mode="after")
    @classmethod
    def _user_ids(cls, v: list[str]) -> list[str]:
        """User ids are numbers (``message.from.id``); a @username would never match and lock everyone out."""
        bad = [u for u in v if not u.isdigit()]
        if bad:
            raise ValueError(f"must be Telegram user ids (digits, message.from.id), got {bad[0][:40]!r}")
        return v


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
    #: "all": klines, trades, mark price, book ticker and depth for every symbol; "needed": only what the
    #: pipeline reads (klines; book ticker, trades and mark price when a broker quotes/settles from them or the
    #: spread/funding filter is on; depth only with the min-depth filter): decisions and fills are the same, and
    #: far fewer messages (docs/benchmarks.md, sizing).
    streams: Literal["all", "needed"] = "all"
    #: A connection that delivers no message for this long is dead (a stall keeps TCP and pings alive).
    silence_timeout_s: float = Field(default=15.0, gt=0.0, le=3_600.0)
    reconnect_backoff_base_s: float = Field(default=1.0, gt=0.0, le=3_600.0)
    reconnect_backoff_max_s: float = Field(default=60.0, gt=0.0, le=3_600.0)
    #: Reconnect on purpose before Binance's 24 h connection limit (new connection first, then close the old).
    planned_reconnect_h: float = Field(default=23.5, gt=0.0, lt=24.0)
    open_timeout_s: float = Field(default=10.0, gt=0.0, le=600.0)
    #: aggTrade (default) or raw trade stream for trade flow.
    trade_stream: Literal["aggTrade", "trade"] = "aggTrade"
    depth_speed: Literal["100ms", "250ms", "500ms", "0ms"] = "100ms"
    depth_snapshot_limit: Literal[5, 10, 20, 50, 100, 500, 1000] = 1000
    #: Order book summary: top-N levels for imbalance, depth within x bps of the mid, emitted at most this often.
    depth_levels: int = Field(default=10, ge=1, le=1000)
    depth_within_bps: float = Field(default=10.0, gt=0.0, le=10_000.0)
    book_summary_interval_ms: int = Field(default=1000, ge=0, le=3_600_000)
    #: How long to wait for every timeframe closing at the same instant before emitting (then REST fills in).
    close_grace_s: float = Field(default=3.0, gt=0.0, le=600.0)
    rest_timeout_s: float = Field(default=10.0, gt=0.0, le=600.0)
    rest_max_retries: int = Field(default=5, ge=0, le=20)
    #: Pause REST calls when Binance reports this much request weight used in the current minute.
    rest_weight_soft_limit: int = Field(default=1800, ge=1, le=100_000)
    #: Longest Retry-After (429/418) the source will wait out; longer is a clear error.
    rest_max_retry_after_s: float = Field(default=120.0, gt=0.0, le=86_400.0)


class ThrottleSettings(_Section):
    """Risk gateway limits in front of the broker; a refusal is journaled and counted with its reason."""

    #: Entry requests (each with its two brackets) per trailing minute of market time.
    max_orders_per_minute: int = Field(default=6, ge=1, le=MAX_CAP)
    max_notional_per_order: float = Field(default=5_000.0, gt=0.0, le=MAX_USDT)
    max_notional_per_symbol: float = Field(default=5_000.0, gt=0.0, le=MAX_USDT)
    max_open_positions: int = Field(default=3, ge=1, le=MAX_CAP)


class PortfolioLimitSettings(_Section):
    """Limits across every symbol at once, checked by the risk gateway before each entry (forced ones too).

    Each is measured with the entry included; the first it would break refuses the entry with its own reason
    code (``portfolio_total_notional``, ``portfolio_margin_usage``, ``portfolio_same_direction``,
    ``portfolio_same_direction_notional``), journaled and counted in ``risk_refusals_total``.  The defaults
    equal what the default throttles allow (3 positions of 5000 USDT at 5x on 10000 USDT), so they only bind
    when a profile tightens them.
    """

    #: Open notional over all symbols (filled price, or the arrival price while the entry is pending), USDT.
    max_total_notional_usdt: float = Field(default=15_000.0, gt=0.0, le=MAX_USDT)
    #: Initial margin of every open position (notional / ceil(max_leverage)) as a fraction of the equity
    #: including unrealized PnL.  1.0 would commit the whole account.
    max_margin_usage: float = Field(default=0.5, gt=0.0, le=1.0)
    #: Open positions on the same side (all long, or all short) at once: correlated crypto moves together.
    max_same_direction_positions: int = Field(default=3, ge=1, le=MAX_CAP)
    #: Open notional on the same side at once, USDT.
    max_same_direction_notional_usdt: float = Field(default=15_000.0, gt=0.0, le=MAX_USDT)


class BreakerSettings(_Section):
    """Circuit breakers; a trip moves trading to ``action`` until an operator resumes."""

    action: Literal["reducing", "halted"] = "halted"
    #: Loss since the start of the UTC day (realized, plus the unrealized PnL of the positions still open), as a
    #: percentage of that day's starting equity.
    daily_loss_pct: float = Field(default=3.0, gt=0.0, le=100.0)
    consecutive_losses: int = Field(default=4, ge=1, le=MAX_CAP)
    order_errors_n: int = Field(default=5, ge=1, le=MAX_CAP)
    order_errors_window_s: float = Field(default=300.0, gt=0.0, le=MAX_S)
    max_data_staleness_s: float = Field(default=120.0, gt=0.0, le=MAX_S)
    max_latency_p95_ms: float = Field(default=1_000.0, gt=0.0, le=600_000.0)
    #: Trip when the shared counter backend is lost while the sniper's Redis policy is ``block``.
    counter_lost_under_block: bool = True


class ExecutionSettings(_Section):
    """Sizing, brokers, gateway throttles and circuit breakers (canary and production)."""

    broker: Literal["none", "paper", "binance"] = "paper"
    #: One executor per account (binance broker with Redis on): the lease lapses this long after its holder stops
    #: renewing, and a standby takes over (reconciling first).  See execution/lease.py.
    lease_ttl_s: float = Field(default=10.0, ge=0.5, le=600.0)
    #: ``stream``: shards trading one account deliver their allowed decisions to the account's inbox in Redis and
    #: only the lease holder executes them, so its risk engine and portfolio enforce the account's limits for the
    #: whole fleet (execution/inbox.py, docs/scaling.md).  ``direct``: this runner's executor trades them itself.
    delivery: Literal["direct", "stream"] = "direct"
    #: Fraction of equity risked per trade: quantity = equity × risk_fraction / stop distance.
    risk_fraction: float = Field(default=0.005, gt=0.0, le=0.05)
    max_leverage: float = Field(default=5.0, gt=0.0, le=125.0)
    max_notional_usdt: float = Field(default=5_000.0, gt=0.0, le=MAX_USDT)
    #: Equity the paper broker starts from (USDT); the binance broker sizes against the account balance.
    paper_equity_usdt: float = Field(default=10_000.0, gt=0.0, le=MAX_USDT)
    #: Which of the candidate's targets (1-based) the take-profit bracket uses; clamped to the last one.
    take_profit_target: int = Field(default=1, ge=1, le=10)
    fee_taker_bps: float = Field(default=5.0, ge=0.0, le=1_000.0)
    fee_maker_bps: float = Field(default=2.0, ge=-10.0, le=1_000.0)
    #: Paper slippage: half the spread (this value when no book ticker was seen) plus a linear size impact.
    slippage_half_spread_bps: float = Field(default=1.0, ge=0.0, le=MAX_BPS)
    slippage_impact_bps_per_10k_usdt: float = Field(default=0.5, ge=0.0, le=MAX_BPS)
    #: Paper: delay (market time) between a decision and the earliest price that may fill it.
    latency_ms: float = Field(default=50.0, ge=0.0, le=600_000.0)
    entry_type: Literal["market", "limit_post_only"] = "market"
    #: A post-only entry not filled within this many seconds is cancelled (then sent at market if fallback).
    limit_timeout_s: float = Field(default=30.0, gt=0.0, le=MAX_S)
    market_fallback: bool = True
    #: Maker-first routing: entries go post-only at the touch whatever ``entry_type`` says.
    maker_first: bool = False
    #: Rollout gate: every fill's |slippage| must stay within this many bps.
    slippage_tolerance_bps: float = Field(default=10.0, gt=0.0, le=MAX_BPS)
    #: Rollout gate: a stage run must span at least this many minutes of market time.
    min_run_minutes: float = Field(default=60.0, ge=0.0, le=525_600.0)
    recv_window_ms: int = Field(default=5_000, ge=1, le=60_000)
    request_timeout_s: float = Field(default=5.0, gt=0.0, le=600.0)
    #: A listen key expires 60 minutes after its last keepalive, so this must stay below an hour.
    listen_key_keepalive_s: float = Field(default=1_800.0, gt=0.0, lt=3_600.0)
    #: The server-time offset signed requests use is measured again this often (and on every -1021).
    time_sync_interval_s: float = Field(default=900.0, gt=0.0, le=86_400.0)
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
    naked_window_alert_ms: float = Field(default=2_000.0, gt=0.0, le=600_000.0)
    #: A saved exchangeInfo answer (JSON or a recording) for paper sizing without network; None: the binance
    #: broker fetches it, the paper broker on simulated/replayed data rounds to 1e-8 only.
    exchange_info_file: str | None = None
    throttles: ThrottleSettings = Field(default_factory=ThrottleSettings)
    portfolio: PortfolioLimitSettings = Field(default_factory=PortfolioLimitSettings)
    breakers: BreakerSettings = Field(default_factory=BreakerSettings)


def _default_min_wall_hours() -> dict[str, float]:
    return {
        "shadow": 2.0,
        "canary": 24.0,
        "production-phase1": 24.0,
        "production-phase2": 72.0,
        "production-phase3": 72.0,
        "production-phase4": 72.0,
    }


class RolloutSettings(_Section):
    """What ``rollout gate`` needs before it lets a stage be promoted (see docs/rollout.md)."""

    #: Wall-clock hours a run of each stage must last, with a live (Binance) source, to be promotable.
    min_wall_hours: dict[str, float] = Field(default_factory=_default_min_wall_hours)
    #: Canary and up: real exchange fills (entries) a stage needs; paper fills never count.
    min_fills: int = Field(default=5, ge=1)
    #: Promotion to production: closed trades the expectancy rests on, and its bootstrap lower bound (R).
    min_signals: int = Field(default=30, ge=1)
    min_expectancy_r: float = 0.0
    #: Bootstrap of the expectancy: resamples and two-sided confidence level.
    bootstrap_samples: int = Field(default=2_000, ge=100, le=100_000)
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)


class ReportSettings(_Section):
    dir: str = "reports"
    #: One SVG per symbol in the shadow/replay report (``apps/svgchart.py``: milliseconds, no matplotlib).
    charts: bool = True
    #: Shadow criterion thresholds.
    max_latency_p95_ms: float = Field(default=500.0, gt=0.0, le=600_000.0)
    max_metrics_gap_s: float = Field(default=30.0, gt=0.0, le=MAX_S)


class LogSettings(_Section):
    """Logging of the process (``observability/logging.py``); ``-v`` on the command line wins over ``level``."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: ``auto``: rich on a terminal, plain lines otherwise; ``json``: one JSON object per line (log shippers).
    format: Literal["auto", "rich", "text", "json"] = "auto"


class Settings(BaseModel):
    """The whole effective configuration.  Build it with :func:`load_settings`, not directly."""

    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)

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
    web: WebSettings = Field(default_factory=WebSettings)
    notifier: NotifierSettings = Field(default_factory=NotifierSettings)
    telegram: TelegramSettings = Field(default_factory=TelegramSettings)
    binance: BinanceSettings = Field(default_factory=BinanceSettings)
    execution: ExecutionSettings = Field(default_factory=ExecutionSettings)
    report: ReportSettings = Field(default_factory=ReportSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    rollout: RolloutSettings = Field(default_factory=RolloutSettings)

    @model_validator(mode="after")
    def _mtf_reachable(self) -> Settings:
        """A signal timeframe whose confirming timeframe is not fed would block every candidate (mtf_required).

        Refused at load rather than added as a context timeframe: adding one changes what the source feeds and how
        much warm-up history it needs, and an operator should see that choice in the settings.  Map entries for
        timeframes that produce no signals are not checked (the default map covers 1m to 1h for any primary).
        """
        sn, rt = self.sniper, self.runtime
        if not (sn.enabled and sn.mtf_confirm):
            return self
        for tf in rt.signal_timeframes:
            htf = sn.mtf_map.get(tf)
            if htf is None:
                raise ValueError(
                    f"sniper.mtf_map has no confirming timeframe for signal timeframe {tf} "
                    f"(runtime.signal_timeframes, by default runtime.primary_timeframe): every candidate would be "
                    f"blocked as mtf_required; "
                    f"add {tf} to sniper.mtf_map or set sniper.mtf_confirm to false"
                )
            if htf not in rt.timeframes:
                raise ValueError(
                    f"sniper.mtf_map confirms signal timeframe {tf} (runtime.signal_timeframes, by default "
                    f"runtime.primary_timeframe) on {htf}, which is not in runtime.timeframes "
                    f"{rt.timeframes}: every candidate would be blocked as mtf_required; add {htf} to "
                    f"runtime.timeframes or map {tf} to one of them"
                )
        return self


#: Dotted keys whose values are secrets: refused in YAML, redacted wherever settings are shown.
SECRET_KEYS = {
    "redis.password",
    "telegram.bot_token",
    "binance.api_key",
    "binance.api_secret",
    "web.read_token",
    "web.write_token",
}
#: Refuse settings files larger than this: no real settings file comes near it, a wrong path might.
MAX_SETTINGS_BYTES = 1_000_000
#: Settings nest three levels (section, key, map entry); anything much deeper is not a settings file.
MAX_YAML_DEPTH = 16
_PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class _Layer:
    """One source of settings: its nested data and, per dotted key, where the value came from."""

    def __init__(self, data: dict[str, Any], origin: dict[str, str]) -> None:
        self.data = data
        self.origin = origin


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


# -- YAML, strictly ----------------------------------------------------------------------------------------
class _Refused(Exception):
    def __init__(self, line: int | None, why: str) -> None:
        super().__init__(why)
        self.line = line
        self.why = why


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (the "billion laughs" expansion), deep nesting and duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            ev = self.peek_event()  # type: ignore[no-untyped-call]
            raise _Refused(ev.start_mark.line + 1, "YAML aliases (*name) are not allowed in settings files")
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                ev = self.peek_event()  # type: ignore[no-untyped-call]
                raise _Refused(ev.start_mark.line + 1, f"nested deeper than {MAX_YAML_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise _Refused(line, "a key must be a plain name, not a list or mapping")
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise _Refused(line, f"duplicate key {key!r} (first at line {seen[key]}); keep one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _key_lines(node: yaml.Node | None, prefix: str = "", out: dict[str, int] | None = None) -> dict[str, int]:
    """Line of every dotted key in a composed YAML document, so errors can say ``file:line``."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode):
                dotted = f"{prefix}{k.value}"
                out[dotted] = k.start_mark.line + 1
                _key_lines(v, dotted + ".", out)
    return out


def _decode(path: Path, raw: bytes) -> str:
    half = len(raw) // 2
    utf16 = raw.startswith((b"\xff\xfe", b"\xfe\xff")) or (
        half > 0 and max(raw[0::2].count(0), raw[1::2].count(0)) >= half * 0.9
    )
    if utf16:
        raise ConfigError(f"{path}: looks like UTF-16 text; save the settings file as UTF-8")
    if b"\x00" in raw:
        raise ConfigError(f"{path}: binary data (NUL bytes), not a YAML settings file")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte {e.start}); save the settings file as UTF-8") from None


def _read_yaml(path: Path) -> _Layer:
    """One YAML layer, refused with ``file:line: why`` for anything a settings file should not hold."""
    try:
        size = path.stat().st_size
        if size > MAX_SETTINGS_BYTES:
            raise ConfigError(f"{path}: {size:,} bytes; a settings file is at most {MAX_SETTINGS_BYTES:,}")
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    text = _decode(path, raw)
    try:
        loader = _StrictLoader(text)  # the reader already refuses control characters here
    except yaml.reader.ReaderError as e:
        line = text[: e.position].count("\n") + 1
        raise ConfigError(f"{path}:{line}: character {e.character:#06x} is not allowed in YAML") from None
    try:
        node = loader.get_single_node()
        lines = _key_lines(node)
        data = loader.construct_document(node) if node is not None else None
    except _Refused as e:
        raise ConfigError(f"{path}:{e.line}: {e.why}") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML: {e.problem or e.context}") from None
    except yaml.reader.ReaderError as e:
        line = text[: e.position].count("\n") + 1
        raise ConfigError(f"{path}:{line}: character {e.character:#06x} is not allowed in YAML") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    finally:
        loader.dispose()
    if data is None:
        return _Layer({}, {})
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    flat = _flatten(data)
    for key, value in flat.items():
        at = f"{path}:{lines.get(key, '?')}"
        if key in SECRET_KEYS and value not in (None, ""):
            raise ConfigError(
                f"{at}: {key}: secrets may only come from the environment or a secrets file, never from YAML"
            )
        if isinstance(value, str) and url_has_credentials(value):
            raise ConfigError(
                f"{at}: {key}: a URL with credentials is a secret; set it in the environment "
                f"(ULTRA_SIGNALS_{key.upper().replace('.', '__')}) or a secrets file, never in YAML"
            )
    origin = {k: f"{path}:{lines[k]}" if k in lines else str(path) for k in flat}
    return _Layer(data, origin)


# -- environment and secrets file --------------------------------------------------------------------------
def _field_for(name: str) -> tuple[list[str], FieldInfo]:
    """The dotted path and field of an ``ULTRA_SIGNALS_*`` name; ConfigError if it names no setting."""
    parts = name.upper()[len(ENV_PREFIX) :].lower().split("__")
    model: type[BaseModel] | None = Settings
    info: FieldInfo | None = None
    for i, part in enumerate(parts):
        fields = model.model_fields if model is not None else {}
        if part not in fields:
            raise ConfigError(f"environment variable {name}: unknown setting {'.'.join(parts[: i + 1])!r}")
        info = fields[part]
        ann = info.annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    if model is not None or info is None:
        raise ConfigError(f"environment variable {name}: {'.'.join(parts)!r} is a section; name one of its keys")
    return parts, info


def _env_value(name: str, raw: str, info: FieldInfo) -> Any:
    """The value as the model should see it: mappings are JSON; lists split by their own validators."""
    if any(isinstance(m, _Raw) for m in info.metadata):
        return raw
    ann = info.annotation
    origins = {get_origin(a) for a in (ann, *get_args(ann))}
    if dict in origins or list in origins:
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            raise ConfigError(
                f'environment variable {name}: not valid JSON (a mapping is written {{"5m": "15m"}})'
            ) from None
        if not isinstance(value, (dict, list)):
            raise ConfigError(f'environment variable {name}: expected a JSON mapping such as {{"5m": "15m"}}')
        return value
    return raw


def _env_layer(items: Mapping[str, str], label: str) -> _Layer:
    data: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name, raw in items.items():
        up = name.upper()
        if not up.startswith(ENV_PREFIX) or up in CONTROL_ENV:
            continue
        parts, info = _field_for(name)
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value = _env_value(name, raw, info)
        dotted = ".".join(parts)
        where = f"{label} {up}" if label else up
        origin[dotted] = where
        if isinstance(value, dict):
            for k in _flatten(value, dotted + "."):
                origin[k] = where
    return _Layer(data, origin)


def _read_secrets_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (``export`` and quotes allowed, ``#`` comments); names without our prefix are ignored."""
    try:
        text = _decode(path, path.read_bytes()[: MAX_SETTINGS_BYTES + 1])
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.startswith("export "):
            s = s[len("export ") :].lstrip()
        name, eq, value = s.partition("=")
        name = name.strip()
        if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ConfigError(f"{path}:{n}: expected NAME=value (the value is not shown: it may be a secret)")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if name.upper() in out:
            raise ConfigError(f"{path}:{n}: {name} is set twice; keep one")
        out[name.upper()] = value
    return out


# -- loading -----------------------------------------------------------------------------------------------
#: The defaults shipped inside the package (``settings.yaml`` and ``profiles/``): found without a checkout, so a
#: ``pip install`` runs from any directory.  The one copy of them; ``ultra-signals init`` writes an editable one.
DEFAULTS_DIR = Path(__file__).resolve().parents[1] / "defaults"


def project_root() -> Path:
    """Folder holding ``settings.yaml`` and ``profiles/``: the working directory, else the packaged defaults."""
    cwd = Path.cwd()
    if (cwd / "settings.yaml").exists():
        return cwd
    return DEFAULTS_DIR


def find_settings(settings_file: str | Path | None = None, env: Mapping[str, str] | None = None) -> tuple[Path, str]:
    """The settings file to load and where that choice came from, in the documented lookup order.

    ``--settings`` flag, then ``ULTRA_SIGNALS_SETTINGS``, then ``./settings.yaml`` in the working directory, then
    the packaged defaults.  ``config show`` prints the second element so an operator sees which file won.
    """
    env = os.environ if env is None else env
    if settings_file:
        return Path(settings_file), "--settings"
    if env.get("ULTRA_SIGNALS_SETTINGS"):
        return Path(env["ULTRA_SIGNALS_SETTINGS"]), "environment variable ULTRA_SIGNALS_SETTINGS"
    cwd = Path.cwd() / "settings.yaml"
    if cwd.exists():
        return cwd, "./settings.yaml in the working directory"
    return DEFAULTS_DIR / "settings.yaml", "packaged defaults"


def find_profile(base_path: Path, profile: str) -> Path:
    """``profiles/<name>.yaml`` beside the settings file when there, else the packaged one (which may not exist)."""
    beside = base_path.parent / "profiles" / f"{profile}.yaml"
    if beside.is_file():
        return beside
    return DEFAULTS_DIR / "profiles" / f"{profile}.yaml"


def load_settings(
    profile: str | None = None,
    *,
    settings_file: str | Path | None = None,
    secrets_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge base, profile, secrets file and env into a validated :class:`Settings`.

    ``env`` is the environment to read (``os.environ`` when None); nothing outside it and the files is read, and
    nothing is changed.  ``environ`` is the former name of ``env``, kept for callers not yet renamed.
    ``overrides`` are dotted keys from CLI flags (``{"runtime.symbols": [...]}``) and win over everything.
    The settings file is found by :func:`find_settings`, the profile by :func:`find_profile`.
    Raises :class:`ConfigError` with one line per problem.
    """
    if env is None:
        env = environ if environ is not None else os.environ
    base_path, _ = find_settings(settings_file, env)
    by = "" if profile or not env.get("ULTRA_SIGNALS_PROFILE") else "environment variable ULTRA_SIGNALS_PROFILE: "
    profile = profile or env.get("ULTRA_SIGNALS_PROFILE") or "shadow"
    if not _PROFILE_NAME.match(profile):
        raise ConfigError(f"{by}profile {profile!r}: a profile is a file name in profiles/, such as canary")
    if not base_path.is_file():
        by_base = "" if settings_file else "environment variable ULTRA_SIGNALS_SETTINGS: "
        raise ConfigError(f"{by_base if env.get('ULTRA_SIGNALS_SETTINGS') else ''}{base_path}: settings file not found")
    prof_path = find_profile(base_path, profile)
    if not prof_path.is_file():
        dirs = {base_path.parent / "profiles", DEFAULTS_DIR / "profiles"}
        known = sorted({p.stem for d in dirs for p in d.glob("*.yaml")})
        raise ConfigError(f"{by}profile {profile!r}: {prof_path} not found (known profiles: {', '.join(known)})")
    sec = secrets_file or env.get("ULTRA_SIGNALS_SECRETS_FILE")
    if sec and not Path(sec).is_file():
        by_sec = "" if secrets_file else "environment variable ULTRA_SIGNALS_SECRETS_FILE: "
        raise ConfigError(f"{by_sec}{sec}: secrets file not found")
    layers = [_read_yaml(base_path), _read_yaml(prof_path)]
    if sec:
        layers.append(_env_layer(_read_secrets_file(Path(sec)), f"secrets file {sec}:"))
    layers.append(_env_layer(env, "environment variable"))
    init: dict[str, Any] = {}
    init_origin: dict[str, str] = {}
    for dotted, value in (overrides or {}).items():
        node = init
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
        init_origin[dotted] = "command line"
    layers.append(_Layer(init, init_origin))
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for layer in layers:  # lowest priority first
        merged = _deep_merge(merged, layer.data)
        origin.update(layer.origin)
    merged["profile"] = profile
    try:
        return Settings.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(_explain(e, origin, _secret_values_raw(merged))) from None
    except RecursionError:
        raise ConfigError("invalid configuration: nested too deeply") from None


def _secret_values_raw(merged: Mapping[str, Any]) -> set[str]:
    """Secret strings in unvalidated input, so an error message never echoes one."""
    out: set[str] = set()
    for key, value in _flatten(merged).items():
        if not isinstance(value, str):
            continue
        if key in SECRET_KEYS:
            out.add(value)
        pw = url_password(value) if "://" in value else None
        if pw:
            out.add(pw)
    return out


def _explain(err: ValidationError, origin: Mapping[str, str], secrets: set[str]) -> str:
    """One line: ``where: key: why (got value)`` per problem, where = file:line, env variable or command line."""
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        reason = "unknown key" if e["type"] == "extra_forbidden" else _reason(e["msg"])
        where = _where(key, reason, origin)
        value = e.get("input")
        suffix = ""
        # Only a single value is echoed, never a section's input (which would carry its other keys, secrets too).
        if e["type"] != "extra_forbidden" and (value is None or isinstance(value, (str, int, float, bool))):
            if any(key == s or key.startswith(s + ".") for s in SECRET_KEYS):
                suffix = " (value not shown: it is a secret)"
            else:
                shown = redact(repr(value), secrets)
                suffix = f" (got {shown[:80]}{'…' if len(shown) > 80 else ''})"
        lines.append(f"{where}: {key}: {reason}{suffix}" if key else f"{where}: {reason}")
    return "invalid configuration: " + "; ".join(lines)


def _reason(msg: str) -> str:
    msg = " ".join(msg.split())
    return msg[len("Value error, ") :] if msg.startswith("Value error, ") else msg


def _where(key: str, reason: str, origin: Mapping[str, str]) -> str:
    """Which file (and line), env variable or flag set the key at fault, highest-priority source first."""
    k = key
    while k:
        if k in origin:
            return origin[k]
        k = k.rpartition(".")[0]
    # A section-wide rule (backoff_initial_s > backoff_max_s): the sources of the keys the message names.
    min_parts = 2 if not key else 1
    found: list[str] = []
    for dotted, where in origin.items():
        if key and not dotted.startswith(key + "."):
            continue
        rel = dotted[len(key) + 1 :] if key else dotted
        parts = rel.split(".")
        for n in range(min_parts, len(parts) + 1):
            name = ".".join(parts[:n])
            if re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", reason):
                if where not in found:
                    found.append(where)
                break
    if not found:
        return "defaults"
    return " and ".join(sorted(found, key=_rank))


def _rank(where: str) -> int:
    """Highest-priority source first: the flag or variable an operator just set is what they look for."""
    for i, prefix in enumerate(("command line", "environment variable", "secrets file")):
        if where.startswith(prefix):
            return i
    return 3


def secret_values(settings: Settings) -> set[str]:
    """Every secret value the settings hold (tokens, keys, passwords, passwords inside URLs), for redaction."""
    out: set[str] = set()
    for s in (
        settings.redis.password,
        settings.telegram.bot_token,
        settings.binance.api_key,
        settings.binance.api_secret,
        settings.web.read_token,
        settings.web.write_token,
    ):
        if s is not None and s.get_secret_value():
            out.add(s.get_secret_value())
    for url in (settings.redis.url, settings.journal.url):
        pw = url_password(url) if url else None
        if pw:
            out.add(pw)
    return out


def redacted_dict(settings: Settings) -> dict[str, Any]:
    """Effective settings as plain data with every secret shown as ``***`` (or null when unset).

    Every string is also passed through :func:`redact`, so a URL with credentials (``journal.url``,
    ``redis.url``) never leaves here with its password -- ``config show``, the report and ``runs.settings_json``
    all print this.
    """
    data = settings.model_dump(mode="python")
    secrets = secret_values(settings)

    def walk(node: Any, prefix: str) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, f"{prefix}{k}.") for k, v in node.items()}
        key = prefix[:-1]
        if key in SECRET_KEYS:
            return None if node is None else "***"
        if isinstance(node, SecretStr):
            return "***"
        if isinstance(node, str):
            return redact(node, secrets)
        return node

    out: dict[str, Any] = walk(data, "")
    return out
