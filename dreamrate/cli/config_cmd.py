"""``dreamrate config``: show the effective settings."""

from __future__ import annotations

import json
from typing import Any

import typer
from pydantic import BaseModel, SecretStr

from dreamrate.cli.cli_state import state
from dreamrate.core.settings import ENV_PREFIX, Settings

__all__ = ["app", "effective_settings"]

app = typer.Typer(help="Inspect settings.", no_args_is_help=True)

MASK = "********"


def _shown(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return MASK
    if isinstance(value, list):
        return [_shown(v) for v in value]
    if hasattr(value, "__fspath__"):
        return str(value)
    return value


def effective_settings(settings: Settings) -> dict[str, Any]:
    """Every setting by environment name, secrets masked, derived values filled in."""
    from dreamrate.database_setup import safe_url

    rows: dict[str, Any] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if isinstance(value, BaseModel):
            for sub in type(value).model_fields:
                rows[f"{ENV_PREFIX}{name}_{sub}".upper()] = _shown(getattr(value, sub))
        else:
            rows[f"{ENV_PREFIX}{name}".upper()] = _shown(value)
    rows["DREAMRATE_DATABASE_URL"] = safe_url(settings.database_url)
    rows["DREAMRATE_STORAGE_IMAGES_DIR"] = str(settings.images_dir)
    rows["DREAMRATE_STORAGE_PREDICTORS_DIR"] = str(settings.predictors_dir)
    return rows


@app.command("show")
def show(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Print the effective settings (environment, dreamrate.toml, defaults), secrets masked."""
    rows = effective_settings(state.settings)
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("setting", "value", box=None, pad_edge=False)
    for key, value in rows.items():
        table.add_row(key, "(not set)" if value is None else str(value))
    Console().print(table)
