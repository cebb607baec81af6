"""A private ``redis-server`` for tests that break Redis (stop, pause, restart empty).

The machine's shared Redis on 6379 is never touched by these: each test gets its own server on a free port,
without persistence, so a restart really comes back empty.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.conftest import free_port

START_TIMEOUT_S = 5.0


class RedisProc:
    def __init__(self, port: int | None = None, *extra: str) -> None:
        self.port = port or free_port()
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0)
        )

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server not found on PATH (apt-get install redis-server)")
        args = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen([*args, *self.extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        c = self.client()
        try:
            while True:
                try:
                    c.ping()
                    return
                except redis.AuthenticationError:
                    return  # answers, but wants a password (a test with requirepass)
                except redis.RedisError:
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        self.stop()
                        pytest.fail(f"private redis-server on port {self.port} did not start")
                    time.sleep(0.02)
        finally:
            c.close()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.paused:
            self.resume()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections but nothing answers, so every call times out."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def restart_empty(self) -> None:
        self.stop()
        self.start()


def private_redis() -> Iterator[RedisProc]:
    """Fixture body: a started private server, stopped afterwards whatever happened."""
    server = RedisProc()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def wait_until(predicate: object, timeout_s: float = 5.0, what: str = "condition", every_s: float = 0.01) -> None:
    """Poll ``predicate()`` every ``every_s`` (10 ms unless told), failing the test after ``timeout_s``."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(every_s)
