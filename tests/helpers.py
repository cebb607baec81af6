"""Helpers several test files share: waiting on a condition, a notifier that records, running the CLI in a
subprocess, metric reads, oracles.

Kept in one place so a fix (a timeout, a tolerance) reaches every test that relies on it; fixtures stay in
conftest.py and domain values in factories.py.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.conftest import DEFAULTS, REPO
from ultra_signals.core.caps import CapRule
from ultra_signals.core.notices import Notice
from ultra_signals.observability.metrics import Metrics

if TYPE_CHECKING:
    from tests.fakes.binance_futures_server import FakeFuturesExchange
    from ultra_signals.venues.binance.client import BinanceFuturesClient


class RecordingNotifier:
    """A Notifier (our interface) that keeps what it is asked to publish."""

    def __init__(self) -> None:
        self.notices: list[Notice] = []

    def publish(self, notice: Notice) -> None:
        self.notices.append(notice)

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


async def until(pred: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll ``pred`` every 10 ms for up to ``timeout`` seconds; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.01)
    return pred()


async def until_or_fail(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    """Like :func:`until`, for steps a scenario cannot go on without: fails the test on timeout."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for our CLI in a subprocess: this process's without any ``ULTRA_SIGNALS_*`` (the application
    refuses names that are not its settings, and the caller's own must not leak in), the checkout on ``PYTHONPATH``,
    then ``extra`` (settings as ``ULTRA_SIGNALS_*``, or anything else such as ``COLUMNS``)."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ULTRA_SIGNALS_")}
    env.update({"PYTHONPATH": str(REPO), **extra})
    return env


def copy_packaged_settings(folder: Path) -> None:
    """Put the packaged ``settings.yaml`` and ``profiles/`` in ``folder`` (as a fresh checkout has them), unless
    already there."""
    if not (folder / "settings.yaml").exists():
        shutil.copy(DEFAULTS / "settings.yaml", folder / "settings.yaml")
    if not (folder / "profiles").exists():
        shutil.copytree(DEFAULTS / "profiles", folder / "profiles")


def run_cli(
    folder: Path, *args: str, env: Mapping[str, str] | None = None, columns: int = 200, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """``python -m ultra_signals *args`` from ``folder`` holding a copy of the settings, as an operator runs it in
    a fresh checkout; ``columns`` wide; ``timeout`` bounds a hang (it raises TimeoutExpired and fails the test)."""
    copy_packaged_settings(folder)
    return subprocess.run(
        [sys.executable, "-m", "ultra_signals", *args],
        cwd=folder,
        env=cli_env(COLUMNS=str(columns), **(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def metric(m: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    """A sample's value from our registry; 0 when the series has not been touched yet."""
    return m.registry.get_sample_value(name, labels or {}) or 0.0


# -- brute-force oracles: independent of the code under test ----------------------------------------------
def window_count(times: Sequence[int], a: int, length: int) -> int:
    return sum(1 for x in times if a <= x < a + length)


def worst_window(times: Sequence[int], length: int) -> int:
    """The fullest window [a, a+length) anywhere on the axis (it starts on a point)."""
    return max((window_count(times, a, length) for a in times), default=0)


def full_window_containing(times: Sequence[int], t: int, rule: CapRule) -> bool:
    """Some window containing t already holds `cap` points, so a point at t would break the cap."""
    starts = [a for a in times if t - rule.length_ms < a <= t] + [t]
    return any(window_count(times, a, rule.length_ms) >= rule.cap for a in starts)


def max_in_window(times: Sequence[float], window: float, eps: float) -> int:
    """Most points in any half-open window of ``window`` seconds (``eps`` absorbs float rounding)."""
    times = sorted(times)
    return max((sum(1 for t in times[i:] if t < a + window - eps) for i, a in enumerate(times)), default=0)


def run_client_on_fake(
    test: Callable[[FakeFuturesExchange, BinanceFuturesClient], Awaitable[None]],
    key: str,
    secret: str,
    *,
    btc_price: str | None = None,
    **client_kw: Any,
) -> None:
    """Run ``test`` against the strict futures fake (the recorded exchangeInfo, keys ``key``/``secret``) and a venue
    client signed with them; ``btc_price`` marks BTCUSDT first; both are closed afterwards, whatever the test did."""
    from pydantic import SecretStr

    from tests.conftest import require_data
    from tests.fakes.binance_futures_server import FakeFuturesExchange, load_recorded_exchange_info_text
    from ultra_signals.venues.binance.client import BinanceFuturesClient
    from ultra_signals.venues.binance.endpoints import Endpoints

    async def main() -> None:
        path = require_data("ws", "binance-futures-exchangeinfo-20210722.txt")
        ex = FakeFuturesExchange(load_recorded_exchange_info_text(str(path)), key, secret)
        await ex.start()
        if btc_price is not None:
            await ex.set_price("BTCUSDT", btc_price)
        c = BinanceFuturesClient(
            Endpoints(ex.rest_url, ex.ws_url), api_key=SecretStr(key), api_secret=SecretStr(secret), **client_kw
        )
        try:
            await test(ex, c)
        finally:
            await c.aclose()
            await ex.stop()

    asyncio.run(main())
