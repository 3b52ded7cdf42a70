"""State shared by CLI commands: the settings, read once per process."""

from __future__ import annotations

from dataclasses import dataclass

from dreamrate.core.log import configure_logging
from dreamrate.core.settings import Settings, load_settings

__all__ = ["CliState", "state"]


@dataclass
class CliState:
    _settings: Settings | None = None

    def load(self) -> Settings:
        """Read settings (raising ConfigError on a bad value) and configure logging."""
        settings = load_settings()
        token = settings.discord.resolved_token()
        configure_logging(settings.log_level, secrets=[token.get_secret_value()] if token else [])
        self._settings = settings
        return settings

    @property
    def settings(self) -> Settings:
        return self._settings if self._settings is not None else self.load()


state = CliState()
