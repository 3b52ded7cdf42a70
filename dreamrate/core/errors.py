"""The one error root of dreamrate and its user-facing subclasses.

This module is a leaf: every package (``db`` included) may import it, so an
error raised anywhere can be caught once at the CLI or bot edge and shown as a
single line.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DatabaseError",
    "DreamrateError",
    "ModelError",
    "StorageError",
]


class DreamrateError(Exception):
    """Something went wrong in dreamrate."""

    #: Process exit code for the CLI; 2 means "bad input or environment, fix and retry".
    exit_code: int = 2

    def __init__(self, message: str | None = None) -> None:
        # As in procrastinate: the class docstring is the default message.
        super().__init__(message or (self.__doc__ or "").strip().splitlines()[0])

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigError(DreamrateError):
    """A setting has a value that is not allowed."""


class DatabaseError(DreamrateError):
    """The database cannot be used."""


class StorageError(DreamrateError):
    """The data directory cannot be used."""


class ModelError(DreamrateError):
    """A model could not be loaded."""
