"""A finished simulated shadow run with a real SQLite journal, and the web app over it (for test_web*.py).

The run is the real pipeline (sim source, memory counters, paper broker) run to its end without any server; the
app is then built over its journal and its runner view exactly as ``bootstrap.build_web`` does, so the API is
checked against what the run really journaled.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ultra_signals import bootstrap
from ultra_signals.control import Control
from ultra_signals.core.config import Settings, load_settings
from ultra_signals.journal.writer import Journal
from ultra_signals.live.runner import Runner
from ultra_signals.live.view import RunnerView
from ultra_signals.transport.notifier import NullNotifier

READ = "r" * 8 + "-read-token-0001"
WRITE = "w" * 8 + "-write-token-0001"


@dataclass
class FinishedRun:
    settings: Settings
    journal: Journal
    runner: Runner

    def control(self) -> Control:
        return Control(self.journal, RunnerView(self.runner), settings=self.settings)

    def app(self, **web: Any) -> Any:
        """The FastAPI app over this run with ``web.*`` settings overridden (tokens given as env, like in life)."""
        from ultra_signals.web.app import create_app

        settings = web_settings(self.settings, **web)
        view = RunnerView(self.runner)
        return create_app(Control(self.journal, view, settings=settings), settings, probe=view)


def web_settings(base: Settings, **web: Any) -> Settings:
    data = base.model_dump()
    data["web"] = {**data["web"], **web}
    return Settings.model_validate(data)


def finished_run(tmp: Path, minutes: int = 360, **overrides: Any) -> FinishedRun:
    settings = load_settings(
        overrides={"journal.url": f"sqlite:///{tmp}/journal.db", "metrics.port": 0, "web.port": 0, **overrides},
        env={},
    )
    journal = bootstrap.open_journal(settings)
    runner = bootstrap.build_runner(
        settings,
        journal=journal,
        source_request=bootstrap.SourceRequest(minutes, None, None, None, False),
        notifier=NullNotifier(),
        serve_metrics=False,
    )
    asyncio.run(runner.run())
    assert runner.web is None  # serve_metrics=False: no port was opened
    return FinishedRun(settings, journal, runner)
