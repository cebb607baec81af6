"""Streaming technical indicators: one closed bar in, O(1) pure-Python float work, the new value out.

Why hand-written rather than TA-Lib on the hot path: every indicator here is a few float operations per bar
on plain Python floats, so a bar costs no array allocation or conversion, the state is ordinary attributes
(copyable, picklable, inspectable in a debugger), and warm-up needs no history buffer to open a handle on.
TA-Lib remains the reference: ``tests/test_indicators.py`` feeds real candles bar by bar and checks every
output against TA-Lib's batch functions.  The conventions below (seeding, alignment, operation order) follow
TA-Lib's C code, so the streamed values agree with the batch ones to within rounding: TA-Lib's compiled
library fuses ``a * b + c`` into one rounding (FMA), which CPython 3.11 cannot express, so a value may differ
in its last bit or two (measured on real candles: EMA, MACD line and ADX/DI almost always bit-identical, RSI
and ATR within ~2e-15 relative, MACD signal/histogram within ~2e-13; Bollinger, computed by a different
algorithm, within ~1e-12).

Note on ``talib.stream``: in the TA-Lib wrapper pinned here (0.8.2, on TA-Lib C 0.8.1) it is a genuine
streaming API (a handle per indicator, O(1) per update, bit-identical to batch), unlike the older wrappers'
``talib.stream``, which computed one value from a whole array passed in on every call.  We still keep
TA-Lib off the hot path: a handle must be opened on at least ``lookback + 1`` bars of history and cannot be
pickled or inspected, VWAP and the volume z-score are not in TA-Lib anyway, and the whole set here costs a
few microseconds per bar (``bench/bench_features.py``).  Switching an indicator to a handle stays possible
without touching callers if profiling ever says so.

Every indicator reports ``nan`` until it is ``ready``; ``warmup`` is the number of bars it needs.  Bars are
counted, not timed: a gap in the data is not filled, as TA-Lib's batch functions would not fill it either.
"""

from __future__ import annotations

import math

NAN = math.nan
DAY_MS = 86_400_000


def _check_period(name: str, period: int, minimum: int = 2) -> int:
    if not isinstance(period, int) or isinstance(period, bool) or period < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum} (got {period!r})")
    return period


class Ema:
    """Exponential moving average, k = 2/(n+1), seeded with the SMA of the first n inputs (TA-Lib's default).

    TA-Lib's update is ``((x - prev) * k) + prev``; we keep that exact order so results match to the bit.
    """

    __slots__ = ("_k", "_n", "_sum", "period", "ready", "value", "warmup")

    def __init__(self, period: int) -> None:
        self.period = _check_period("EMA period", period)
        self.warmup = period
        self._k = 2.0 / (period + 1)
        self._n = 0
        self._sum = 0.0
        self.value = NAN
        self.ready = False

    def update(self, x: float) -> float:
        if self.ready:
            v = ((x - self.value) * self._k) + self.value
            self.value = v
            return v
        self._n += 1
        self._sum += x
        if self._n == self.period:
            self.value = self._sum / self.period
            self.ready = True
        return self.value


class Rsi:
    """Wilder's RSI as TA-Lib computes it.

    Seed: the plain averages of the first n gains and losses (bars 1..n, so the first value lands on bar n,
    the (n+1)-th bar).  Then Wilder smoothing ``avg = (avg * (n - 1) + x) / n``.  When both averages are zero
    (a perfectly flat market since the seed) TA-Lib reports 0.0, and so do we; scoring must not read that
    as "oversold" without also looking at ATR.
    """

    __slots__ = ("_n", "_pm1", "_prev", "avg_gain", "avg_loss", "period", "ready", "value", "warmup")

    def __init__(self, period: int) -> None:
        self.period = _check_period("RSI period", period)
        self.warmup = period + 1
        self._pm1 = float(period - 1)
        self._n = 0
        self._prev = NAN
        self.avg_gain = 0.0
        self.avg_loss = 0.0
        self.value = NAN
        self.ready = False

    def update(self, x: float) -> float:
        d = x - self._prev
        self._prev = x
        if self.ready:
            p = self.period
            gain = self.avg_gain * self._pm1
            loss = self.avg_loss * self._pm1
            if d < 0.0:
                loss -= d
            else:
                gain += d
            gain /= p
            loss /= p
            self.avg_gain = gain
            self.avg_loss = loss
        else:
            n = self._n
            self._n = n + 1
            if n == 0:
                return NAN
            if d < 0.0:
                self.avg_loss -= d
            else:
                self.avg_gain += d
            if n < self.period:
                return NAN
            gain = self.avg_gain = self.avg_gain / self.period
            loss = self.avg_loss = self.avg_loss / self.period
            self.ready = True
        s = gain + loss
        v = 100.0 * (gain / s) if s != 0.0 else 0.0
        self.value = v
        return v


class Atr:
    """Wilder's average true range as TA-Lib computes it.

    The first bar has no previous close and therefore no true range; the seed is the SMA of the true ranges
    of bars 1..n, so the first value lands on bar n.  Then ``atr = (atr * (n - 1) + tr) / n``.
    """

    __slots__ = ("_n", "_pm1", "_prev_close", "_sum", "period", "ready", "value", "warmup")

    def __init__(self, period: int) -> None:
        self.period = _check_period("ATR period", period)
        self.warmup = period + 1
        self._pm1 = float(period - 1)
        self._n = 0
        self._prev_close = NAN
        self._sum = 0.0
        self.value = NAN
        self.ready = False

    def update(self, high: float, low: float, close: float) -> float:
        pc = self._prev_close
        self._prev_close = close
        tr = high - low
        t = abs(pc - high)
        if t > tr:
            tr = t
        t = abs(pc - low)
        if t > tr:
            tr = t
        if self.ready:
            v = ((self.value * self._pm1) + tr) / self.period
            self.value = v
            return v
        n = self._n
        self._n = n + 1
        if n == 0:
            return NAN  # no previous close, no true range
        self._sum += tr
        if n < self.period:
            return NAN
        v = self.value = self._sum / self.period
        self.ready = True
        return v


class Macd:
    """MACD with TA-Lib's alignment.

    TA-Lib does not seed the fast EMA on the first ``fast`` closes: it starts both EMAs on the bar where the
    slow one is first defined (bar ``slow - 1``), seeding the fast EMA with the SMA of the ``fast`` closes
    ending there.  The MACD line starts on that bar; the signal line is an EMA of the MACD line seeded with
    the SMA of its first ``signal`` values.  All three outputs are reported from the bar the signal is first
    defined (bar ``slow + signal - 2``), as TA-Lib does.
    """

    __slots__ = (
        "_fast_k",
        "_fast_sum",
        "_n",
        "_sig_k",
        "_sig_n",
        "_sig_sum",
        "_slow",
        "fast",
        "fast_ema",
        "hist",
        "macd",
        "ready",
        "signal",
        "signal_period",
        "slow",
        "warmup",
    )

    def __init__(self, fast: int, slow: int, signal: int) -> None:
        _check_period("MACD fast period", fast)
        _check_period("MACD slow period", slow)
        self.signal_period = _check_period("MACD signal period", signal, minimum=1)
        if fast >= slow:
            raise ValueError(f"MACD fast period ({fast}) must be below the slow period ({slow})")
        self.fast = fast
        self.slow = slow
        self.warmup = slow + signal - 1
        self._slow = Ema(slow)
        self._fast_k = 2.0 / (fast + 1)
        self._sig_k = 2.0 / (signal + 1)
        self._n = 0
        self._fast_sum = 0.0
        self._sig_n = 0
        self._sig_sum = 0.0
        self.fast_ema = NAN
        self.macd = NAN
        self.signal = NAN
        self.hist = NAN
        self.ready = False

    def update(self, x: float) -> tuple[float, float, float]:
        slow = self._slow.update(x)
        if self.ready:
            f = ((x - self.fast_ema) * self._fast_k) + self.fast_ema
            self.fast_ema = f
            m = f - slow
            s = ((m - self.signal) * self._sig_k) + self.signal
            h = m - s
            self.macd = m
            self.signal = s
            self.hist = h
            return m, s, h
        return self._warm(x, slow)

    def _warm(self, x: float, slow: float) -> tuple[float, float, float]:
        n = self._n
        self._n = n + 1
        if n < self.slow - self.fast:
            return NAN, NAN, NAN
        if n < self.slow - 1:
            self._fast_sum += x
            return NAN, NAN, NAN
        if n == self.slow - 1:
            self.fast_ema = (self._fast_sum + x) / self.fast
        else:
            self.fast_ema = ((x - self.fast_ema) * self._fast_k) + self.fast_ema
        m = self.fast_ema - slow
        self._sig_n += 1
        self._sig_sum += m
        if self._sig_n < self.signal_period:
            return NAN, NAN, NAN
        s = self._sig_sum / self.signal_period
        self.macd = m
        self.signal = s
        self.hist = m - s
        self.ready = True
        return m, s, self.hist


class Adx:
    """ADX with +DI/-DI, Wilder smoothing, exactly as TA-Lib's ADX, PLUS_DI and MINUS_DI compute them.

    TA-Lib's smoothing of DM and TR is a running *sum*, not an average: it adds the first ``n - 1`` raw values
    (bars 1..n-1), then on each later bar does ``s = s - s/n + x``.  DI = 100·DM/TR is defined from bar n;
    ADX seeds as the mean of the n DX values of bars n..2n-1 and then smooths ``(adx·(n-1) + dx)/n``.
    A bar whose +DI and -DI are both zero has no DX: the ADX keeps its value (during the seed it adds 0).
    While the smoothed TR is zero, both DIs are 0.0, as TA-Lib reports.
    """

    __slots__ = (
        "_mdm",
        "_n",
        "_pdm",
        "_pm1",
        "_prev_close",
        "_prev_high",
        "_prev_low",
        "_sum_dx",
        "_tr",
        "adx",
        "di_ready",
        "minus_di",
        "period",
        "plus_di",
        "ready",
        "warmup",
    )

    def __init__(self, period: int) -> None:
        self.period = _check_period("ADX period", period)
        self.warmup = 2 * period
        self._pm1 = float(period - 1)
        self._n = 0
        self._prev_high = self._prev_low = self._prev_close = NAN
        self._pdm = self._mdm = self._tr = self._sum_dx = 0.0
        self.adx = self.plus_di = self.minus_di = NAN
        self.di_ready = False
        self.ready = False

    def update(self, high: float, low: float, close: float) -> tuple[float, float, float]:
        n = self._n
        self._n = n + 1
        p = self.period
        diff_p = high - self._prev_high
        diff_m = self._prev_low - low
        pc = self._prev_close
        self._prev_high = high
        self._prev_low = low
        self._prev_close = close
        if n == 0:
            return NAN, NAN, NAN
        tr = high - low
        t = abs(high - pc)
        if t > tr:
            tr = t
        t = abs(low - pc)
        if t > tr:
            tr = t
        pdm = self._pdm
        mdm = self._mdm
        if n < p:
            if diff_m > 0.0 and diff_p < diff_m:
                self._mdm = mdm + diff_m
            elif diff_p > 0.0 and diff_p > diff_m:
                self._pdm = pdm + diff_p
            self._tr += tr
            return NAN, NAN, NAN
        mdm -= mdm / p
        pdm -= pdm / p
        if diff_m > 0.0 and diff_p < diff_m:
            mdm += diff_m
        elif diff_p > 0.0 and diff_p > diff_m:
            pdm += diff_p
        trs = self._tr
        trs = trs - (trs / p) + tr
        self._pdm = pdm
        self._mdm = mdm
        self._tr = trs
        dx = NAN
        if trs != 0.0:
            mdi = 100.0 * (mdm / trs)
            pdi = 100.0 * (pdm / trs)
            s = mdi + pdi
            if s != 0.0:
                dx = 100.0 * (abs(mdi - pdi) / s)
        else:
            mdi = pdi = 0.0
        self.plus_di = pdi
        self.minus_di = mdi
        self.di_ready = True
        if self.ready:
            if dx == dx:
                self.adx = ((self.adx * self._pm1) + dx) / p
        else:
            if dx == dx:
                self._sum_dx += dx
            if n == 2 * p - 1:
                self.adx = self._sum_dx / p
                self.ready = True
        return self.adx, pdi, mdi


class _RollingStats:
    """Mean and population variance of the last n values, O(1) per value.

    A sliding Welford update (numerically sound where ``E[x²] - E[x]²`` cancels catastrophically on prices
    like 60000 ± 5).  Its rounding error is relative to the largest sum of squares the window has held, not
    to the current one: after a volume spike leaves the window, or when the window turns constant, the
    residue can dwarf the true variance (a z-score of a constant window would be noise divided by noise).
    So whenever the sum of squares falls below a millionth of its peak since the last exact pass, and every
    4096 values to bound drift, it is recomputed exactly from the ring buffer; a window of identical values
    then has variance exactly 0.
    """

    __slots__ = ("_buf", "_i", "_inv_n", "_peak", "_since_sync", "count", "m2", "mean", "n")

    def __init__(self, n: int) -> None:
        self.n = n
        self._inv_n = 1.0 / n
        self._buf = [0.0] * n
        self._i = 0
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0
        self._peak = 0.0
        self._since_sync = 0

    def push(self, x: float) -> None:
        buf = self._buf
        i = self._i
        if self.count == self.n:
            old = buf[i]
            buf[i] = x
            i += 1
            self._i = 0 if i == self.n else i
            d = x - old
            if d == 0.0:
                return  # same multiset of values: nothing moved
            mean0 = self.mean
            mean = mean0 + d * self._inv_n
            self.mean = mean
            m2 = self.m2 + d * ((x - mean) + (old - mean0))
        else:
            buf[i] = x
            i += 1
            self._i = 0 if i == self.n else i
            c = self.count + 1
            self.count = c
            delta = x - self.mean
            self.mean += delta / c
            m2 = self.m2 + delta * (x - self.mean)
        self.m2 = m2
        if m2 > self._peak:
            self._peak = m2
        self._since_sync += 1
        if m2 <= 1e-6 * self._peak or self._since_sync >= 4096:
            self._resync()

    def _resync(self) -> None:
        self._since_sync = 0
        vals = self._buf if self.count == self.n else self._buf[: self.count]
        lo = min(vals)
        if lo == max(vals):
            self.mean = lo
            self.m2 = self._peak = 0.0
            return
        mean = math.fsum(vals) / len(vals)
        self.mean = mean
        self.m2 = self._peak = math.fsum([(v - mean) * (v - mean) for v in vals])

    @property
    def std(self) -> float:
        """Population standard deviation (ddof=0, as TA-Lib's STDDEV and BBANDS use)."""
        m2 = self.m2
        return math.sqrt(m2 * self._inv_n) if m2 > 0.0 else 0.0


class Bollinger:
    """Bollinger bands: SMA(n) ± k·population std of the last n closes (TA-Lib BBANDS with matype=0).

    Not bit-identical to TA-Lib (which keeps running sums of x and x²): this uses the sliding Welford update,
    which stays accurate for any price level; the test checks agreement to a relative 1e-9.
    """

    __slots__ = ("_stats", "k", "lower", "mid", "period", "ready", "upper", "warmup")

    def __init__(self, period: int, k: float) -> None:
        self.period = _check_period("Bollinger period", period)
        if not k >= 0.0 or math.isinf(k):
            raise ValueError(f"Bollinger width must be a finite number >= 0 (got {k!r})")
        self.k = float(k)
        self.warmup = period
        self._stats = _RollingStats(period)
        self.mid = self.upper = self.lower = NAN
        self.ready = False

    def update(self, x: float) -> tuple[float, float, float]:
        st = self._stats
        st.push(x)
        if st.count < self.period:
            return NAN, NAN, NAN
        self.ready = True
        mid = st.mean
        w = self.k * st.std
        self.mid = mid
        self.upper = u = mid + w
        self.lower = lo = mid - w
        return mid, u, lo


class VolumeZ:
    """Z-score of the bar's volume against the last n volumes, the current one included.

    ``(v - mean) / std`` with the population std (ddof=0); 0.0 when the window is constant (std 0).
    """

    __slots__ = ("_stats", "period", "ready", "value", "warmup")

    def __init__(self, period: int) -> None:
        self.period = _check_period("volume z-score period", period)
        self.warmup = period
        self._stats = _RollingStats(period)
        self.value = NAN
        self.ready = False

    def update(self, volume: float) -> float:
        st = self._stats
        st.push(volume)
        if st.count < self.period:
            return NAN
        self.ready = True
        sd = st.std
        z = (volume - st.mean) / sd if sd > 0.0 else 0.0
        self.value = z
        return z


class Vwap:
    """VWAP anchored at the start of each UTC day, with bands at ± k volume-weighted std of typical price.

    Typical price is (high + low + close) / 3; each bar is weighted by its volume.  Weighted mean and variance
    are updated with West's incremental algorithm, which avoids the cancellation of ``Σv·tp²/Σv - vwap²``.
    Until the day has seen any volume the VWAP falls back to the bar's typical price and the bands collapse
    onto it (a value is better than a gap that would switch the warm flag off at every midnight).
    """

    __slots__ = ("_day", "_mean", "_s", "_w", "k", "lower", "ready", "upper", "vwap", "warmup")

    def __init__(self, k: float) -> None:
        if not k >= 0.0 or math.isinf(k):
            raise ValueError(f"VWAP band width must be a finite number >= 0 (got {k!r})")
        self.k = float(k)
        self.warmup = 1
        self._day = -1
        self._w = self._s = self._mean = 0.0
        self.vwap = self.upper = self.lower = NAN
        self.ready = False

    def update(
        self, open_time_ms: int, high: float, low: float, close: float, volume: float
    ) -> tuple[float, float, float]:
        tp = (high + low + close) / 3.0
        day = open_time_ms // DAY_MS
        if day != self._day:
            self._day = day
            self._w = self._s = self._mean = 0.0
        w = self._w
        if volume > 0.0:
            w += volume
            self._w = w
            mean0 = self._mean
            delta = tp - mean0
            mean = mean0 + delta * (volume / w)
            self._mean = mean
            self._s += volume * delta * (tp - mean)
        if w > 0.0:
            mean = self._mean
            s = self._s
            band = self.k * math.sqrt(s / w) if s > 0.0 else 0.0
        else:
            mean = tp
            band = 0.0
        self.ready = True
        self.vwap = mean
        self.upper = u = mean + band
        self.lower = lo = mean - band
        return mean, u, lo
