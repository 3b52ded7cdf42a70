"""The ``dreamrate`` command line: one group per package, every user error one line and exit 2."""

from __future__ import annotations

import logging
import sys

import typer
import typer.main

from dreamrate import __version__
from dreamrate.cli import (
    aesthetic_cmd,
    arena_cmd,
    bot_cmd,
    config_cmd,
    db_cmd,
    demo_cmd,
    fetch_cmd,
    finetune_cmd,
    generation_cmd,
    models_cmd,
    ratings_cmd,
    score_cmd,
    synthetic_cmd,
    web_cmd,
)
from dreamrate.cli.checks import refuse_blank_values, usage_error_line
from dreamrate.cli.cli_state import state
from dreamrate.core.errors import DreamrateError

__all__ = ["app", "main"]

logger = logging.getLogger(__name__)

app = typer.Typer(
    name="dreamrate",
    help="Community Stable Diffusion ratings turned into aesthetic filters for training data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(config_cmd.app, name="config")
app.add_typer(db_cmd.app, name="db")
app.add_typer(models_cmd.app, name="models")
app.add_typer(ratings_cmd.app, name="ratings")
app.add_typer(ratings_cmd.comparisons_app, name="comparisons")
app.add_typer(arena_cmd.app, name="arena")
app.command("bot")(bot_cmd.bot_cmd)
app.command("worker")(generation_cmd.worker_cmd)
app.command("generate")(generation_cmd.generate_cmd)
app.command("embed")(aesthetic_cmd.embed_cmd)
app.command("train")(aesthetic_cmd.train_cmd)
app.add_typer(aesthetic_cmd.predictor_app, name="predictor")
app.command("score")(score_cmd.score_cmd)
app.command("demo")(demo_cmd.demo_cmd)
app.add_typer(score_cmd.export_app, name="export")
app.command("fetch")(fetch_cmd.fetch_cmd)
app.command("finetune")(finetune_cmd.finetune_cmd)
app.add_typer(synthetic_cmd.app, name="synthetic")
app.command("web")(web_cmd.web_cmd)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dreamrate {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Load settings once and set up logging before any command runs."""
    state.load()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dreamrate`` script; returns the exit code.

    Every bad input, a usage error (an unknown option, a value of the wrong type or out of
    range, an empty one) or a :class:`DreamrateError` from a command, becomes one
    ``error: ...`` line on stderr and its exit code (2), never a traceback or a box.
    """
    command = typer.main.get_command(app)
    refuse_blank_values(command)
    try:
        # Not standalone: click's errors come here instead of being drawn by typer.
        result = command.main(args=argv, prog_name="dreamrate", standalone_mode=False)
    except DreamrateError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        return exc.exit_code
    except typer.TyperException as exc:
        # A group run without a command has printed its help (typer tells this one apart
        # by name too, as it does not export the class).
        if type(exc).__name__ == "NoArgsIsHelpError":
            if exc.format_message().strip():  # without rich, the help is still to print
                typer.echo(exc.format_message(), err=True)
        else:
            typer.echo(f"error: {usage_error_line(exc)}", err=True)
        return int(getattr(exc, "exit_code", 2))
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        return 1
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    # --help, --version and typer.Exit(code) return their exit code; commands return None.
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
