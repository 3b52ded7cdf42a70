"""``dreamrate db``: migrate and inspect the database."""

from __future__ import annotations

import asyncio

import typer

from dreamrate.cli.cli_state import state

__all__ = ["app"]

app = typer.Typer(help="Database schema and status.", no_args_is_help=True)


@app.command("upgrade")
def upgrade_cmd() -> None:
    """Create or migrate the database to the newest schema (safe to repeat)."""
    from dreamrate.database_setup import database, safe_url
    from dreamrate.db.migrate import migration_status

    async def run() -> str:
        settings = state.settings
        async with database(settings, migrate=True) as engine:
            status = await migration_status(engine)
        return f"{safe_url(settings.database_url)}: at migration {status.current} (newest)"

    typer.echo(asyncio.run(run()))


@app.command("status")
def status_cmd() -> None:
    """Print the database's migration and whether it is current; exit 1 when behind."""
    from dreamrate.database_setup import connect_database, safe_url
    from dreamrate.db.migrate import migration_status

    async def run() -> tuple[str, bool]:
        settings = state.settings
        engine = await connect_database(settings.database_url)
        try:
            status = await migration_status(engine)
        finally:
            await engine.dispose()
        where = safe_url(settings.database_url)
        if status.up_to_date:
            return f"{where}: at migration {status.current} (newest)", True
        return (
            f"{where}: at migration {status.current or '(empty)'}, newest is {status.head}; "
            "run `dreamrate db upgrade`",
            False,
        )

    line, current = asyncio.run(run())
    typer.echo(line)
    if not current:
        raise typer.Exit(1)
