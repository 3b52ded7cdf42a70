"""Checks of command-line values that typer's types cannot express, run while arguments
are parsed: a refused value stops the command before it opens, creates or enqueues anything."""

from __future__ import annotations

import os
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperOption

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "file_problem",
    "folder_problem",
    "input_file",
    "output_file",
    "output_folder",
    "refuse_blank_values",
    "usage_error_line",
]


def refuse_blank_values(command: Any) -> None:
    """Make every parameter of ``command`` and its subcommands refuse an empty value.

    An empty string is never a useful path, model, host or name: as a path it silently
    means the current folder (``Path("")`` is ``.``), elsewhere it silently means the
    default. The check runs on the raw text, before typer turns it into a ``Path``.
    """
    for param in command.params:
        param.process_value = _checked(param.process_value, param)
    for sub in getattr(command, "commands", {}).values():
        refuse_blank_values(sub)


def _checked(process: Callable[[Any, Any], Any], param: Any) -> Callable[[Any, Any], Any]:
    @wraps(process)
    def process_value(ctx: Any, value: Any) -> Any:
        values = value if isinstance(value, list | tuple) else (value,)
        if any(v == "" for v in values):
            raise typer.BadParameter("must not be empty", ctx=ctx, param=param)
        return process(ctx, value)

    return process_value


def usage_error_line(exc: typer.TyperException) -> str:
    """One line for a usage error: ``--option: reason (got 'value') (see `... --help`)``."""
    param = getattr(exc, "param", None)
    if isinstance(exc, typer.BadParameter) and param is not None and exc.message:
        # Missing parameters carry no message of their own; their default one is clear.
        name = param.opts[0] if isinstance(param, TyperOption) else param.name.upper()
        line = f"{name}: {exc.message}"
        # typer coerces with pydantic, whose error holds the text that was refused.
        errors = exc.__cause__.errors() if hasattr(exc.__cause__, "errors") else []
        if errors and "input" in errors[0]:
            line += f" (got {str(errors[0]['input'])[:60]!r})"
    else:
        line = exc.format_message()
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        line = line.rstrip().rstrip(".") + f" (see `{ctx.command_path} --help`)"
    return " ".join(line.split())


def folder_problem(path: Path) -> str | None:
    """Why no folder can be written at ``path`` (None: it can), without creating anything."""
    # The last parent is "/" or "." (the working folder), which exist.
    existing = next((p for p in (path, *path.parents) if p.exists()), Path.cwd())
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot write in {existing} (permission denied)"
    return None


def file_problem(path: Path) -> str | None:
    """Why no file can be written at ``path`` (None: it can): its folder must exist already."""
    if path.is_dir():
        return f"{path} is a folder, not a file"
    folder = path.parent
    if not folder.exists():
        return f"the folder {folder} does not exist (create it first)"
    if not folder.is_dir():
        return f"{folder} is a file, not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot write in {folder} (permission denied)"
    return None


def output_folder(value: Path | None) -> Path | None:
    """Callback of an option naming a folder to write (the command makes it and any missing
    folders above it): a file, or a place no folder can be made, is refused up front."""
    if value is not None and (problem := folder_problem(value)):
        raise typer.BadParameter(problem)
    return value


def output_file(value: Path | None) -> Path | None:
    """Callback of an option naming a file to write: its folder must already exist (a typo
    in a folder's name is refused, not created)."""
    if value is not None and (problem := file_problem(value)):
        raise typer.BadParameter(problem)
    return value


def input_file(value: Path | None) -> Path | None:
    """Callback of an option naming a file to read: a folder is refused as such (a missing
    file is left to the command, which says what the file should hold)."""
    if value is not None and value.is_dir():
        raise typer.BadParameter(f"{value} is a folder, not a file")
    return value
