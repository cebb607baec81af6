"""The status page and REST API a runner serves (``web.enabled``): a thin HTTP adapter over ``control``.

Nothing heavy is imported here: FastAPI and uvicorn load only when :class:`ultra_signals.web.server.WebServer`
starts, so the CLI's ``--help`` does not pay for them.  See docs/web.md.
"""
