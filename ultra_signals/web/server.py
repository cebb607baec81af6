"""uvicorn inside the runner's own asyncio loop: started as a task, stopped at the end of the run, no thread.

Why not uvicorn's thread or ``uvicorn.run``: the runner already owns a loop, and a second loop in a thread would
race the runner's objects.  The socket is bound here (so ``port=0`` gives the real port back at once, and a busy
port is one clear error) and handed to ``Server.serve``; uvicorn's own signal capture is switched off, because
SIGINT / SIGTERM belong to the CLI, which ends the run (and with it this server) cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ultra_signals.core.config import Settings

if TYPE_CHECKING:
    import uvicorn

    from ultra_signals.control import Control
    from ultra_signals.web.app import LiveProbe

log = logging.getLogger(__name__)

#: How long the end of a run waits for open requests to finish before the server is cancelled.
SHUTDOWN_S = 5


class WebServeError(RuntimeError):
    """The web server cannot start (port busy, address refused): one line for the operator."""


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        why = "already in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
        raise WebServeError(
            f"web.port {port}: cannot serve the status page on {host}:{port}: {why} "
            "(set web.port, ULTRA_SIGNALS_WEB__PORT or --web-port; 0 picks a free port)"
        ) from None
    return sock


class WebServer:
    """The status page and API of one run.  ``await start()`` returns the bound port; ``await aclose()`` stops."""

    def __init__(self, control: Control, settings: Settings, *, probe: LiveProbe | None = None) -> None:
        self.control = control
        self.settings = settings
        self.probe = probe
        self.port: int | None = None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str | None:
        if self.port is None:
            return None
        host = self.settings.web.host
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}/"

    async def start(self) -> int:
        web = self.settings.web
        if not web.loopback and web.read_token is None:  # the settings refuse this too; never rely on one fence
            raise WebServeError(f"web.host {web.host!r} is not loopback and web.read_token is not set: refused")
        # The web stack is imported here, when a server starts, not when the CLI loads (`--help` stays fast).
        import uvicorn

        from ultra_signals.web.app import create_app

        app = create_app(self.control, self.settings, probe=self.probe)
        sock = _bind(web.host, web.port)

        class _Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:  # the CLI owns SIGINT / SIGTERM
                yield

        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=SHUTDOWN_S,
        )
        server = _Server(config)
        self._sock, self._server = sock, server
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name="web-server")
        for _ in range(200):  # until uvicorn has its listener up (bounded: 2 s), or the task died
            if server.started or self._task.done():
                break
            await asyncio.sleep(0.01)
        if self._task.done():
            exc = self._task.exception()
            sock.close()
            raise WebServeError(f"web server failed to start: {exc}")
        self.port = int(sock.getsockname()[1])
        log.info("web: status page on %s", self.url)
        return self.port

    async def aclose(self) -> None:
        server, task = self._server, self._task
        if server is None or task is None:
            return
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), SHUTDOWN_S + 1.0)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        except Exception as e:  # the server failed while running: the run's end must not
            log.warning("web server ended with %s: %s", type(e).__name__, e)
        if self._sock is not None:
            self._sock.close()
        self._server = self._task = self._sock = None
