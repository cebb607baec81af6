"""A tiny TCP forwarder on 127.0.0.1 that a test can cut and heal: a network partition between ONE client and a
server while every other client keeps its direct path.

Why a proxy and not a paused server: SIGSTOP or stopping Redis cuts every runner at once; a partition cuts one.
Two ways to cut, as networks fail:

- ``cut("refuse")``: every open connection is closed and new ones are closed as soon as they are accepted (a
  reset / a firewall that rejects): the client's next call fails at once.
- ``cut("drop")``: every byte is silently discarded in both directions and new connections are accepted but
  never answered (a firewall that drops, a cable pulled): the client's calls time out.

``heal()`` forwards again; connections held in "drop" mode are closed then, so the client reconnects to a clean
stream (bytes dropped in the middle of a Redis reply cannot be resumed).  One thread accepts, two threads pump
each connection; every socket has a timeout so ``close()`` returns within a second.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Literal

CutMode = Literal["refuse", "drop"]
_POLL_S = 0.2


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(_POLL_S)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket | None]] = []
        self._mode: CutMode | None = None  # None: forwarding
        self._closed = threading.Event()
        self.accepted = 0
        self.refused = 0
        self._thread = threading.Thread(target=self._accept_loop, name=f"tcp-proxy-{self.port}", daemon=True)
        self._thread.start()

    @property
    def is_cut(self) -> bool:
        return self._mode is not None

    def cut(self, mode: CutMode = "refuse") -> None:
        with self._lock:
            self._mode = mode
            pairs = list(self._pairs) if mode == "refuse" else []
            if mode == "refuse":
                self._pairs.clear()
        for pair in pairs:
            _close(*pair)

    def heal(self) -> None:
        with self._lock:
            was = self._mode
            self._mode = None
            pairs = list(self._pairs) if was == "drop" else []
            if was == "drop":
                self._pairs.clear()
        for pair in pairs:  # their streams lost bytes: the client must reconnect
            _close(*pair)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
        self._listener.close()
        with self._lock:
            pairs, self._pairs = list(self._pairs), []
        for pair in pairs:
            _close(*pair)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- threads ---------------------------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                mode = self._mode
            if mode == "refuse":
                self.refused += 1
                _close(client, None)
                continue
            if mode == "drop":  # accepted, never answered (no upstream connection either)
                with self._lock:
                    self._pairs.append((client, None))
                threading.Thread(target=self._drain, args=(client,), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                _close(client, None)
                continue
            self.accepted += 1
            client.settimeout(_POLL_S)
            upstream.settimeout(_POLL_S)
            with self._lock:
                self._pairs.append((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst, client, upstream), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, client: socket.socket, upstream: socket.socket) -> None:
        while not self._closed.is_set():
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            if self._mode == "drop":
                continue  # lost on the wire
            try:
                dst.sendall(data)
            except OSError:
                break
        with self._lock:
            if (client, upstream) in self._pairs:
                self._pairs.remove((client, upstream))
        _close(client, upstream)

    def _drain(self, client: socket.socket) -> None:
        """A connection made while dropping: read and discard until healed (then closed) or closed."""
        client.settimeout(_POLL_S)
        while not self._closed.is_set():
            try:
                if not client.recv(65536):
                    break
            except TimeoutError:
                continue
            except OSError:
                break
        _close(client, None)


def _close(a: socket.socket, b: socket.socket | None) -> None:
    for s in (a, b):
        if s is None:
            continue
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        s.close()
