"""State shared by CLI commands: the settings, read once per process."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from dreamrate.core.log import configure_logging
from dreamrate.core.settings import Settings, load_settings

__all__ = [
    "BotMetricsPort",
    "CliState",
    "GuildOption",
    "WebMetricsPort",
    "WorkerMetricsPort",
    "covered",
    "state",
]


@dataclass
class CliState:
    _settings: Settings | None = None

    def load(self) -> Settings:
        """Read settings (raising ConfigError on a bad value) and configure logging."""
        settings = load_settings()
        configure_logging(
            settings.log_level, secrets=settings.secrets(), log_format=settings.log_format
        )
        self._settings = settings
        return settings

    @property
    def settings(self) -> Settings:
        return self._settings if self._settings is not None else self.load()


state = CliState()


#: ``--guild ID`` (repeatable): the communities a maintainer command reads; default all.
GuildOption = Annotated[
    list[int] | None,
    typer.Option(
        "--guild", min=1, help="Only this guild's images and ratings (repeatable; default: all)."
    ),
]


def _metrics_port(setting: str) -> Any:
    return Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            min=0,
            max=65535,
            help=f"Serve /metrics and /healthz on this port ({setting}).",
        ),
    ]


#: ``--metrics-port P`` of each long-running process.
BotMetricsPort = _metrics_port("DREAMRATE_METRICS_BOT_PORT")
WorkerMetricsPort = _metrics_port("DREAMRATE_METRICS_WORKER_PORT")
WebMetricsPort = _metrics_port("DREAMRATE_METRICS_WEB_PORT")


def covered(guilds: Sequence[int] | None) -> str:
    """What a command's output says it read."""
    return f"guild(s) {', '.join(map(str, guilds))}" if guilds else "every guild"
