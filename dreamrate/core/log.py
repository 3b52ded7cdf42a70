"""Logging set-up: rich console output (or one JSON object a line), and secrets scrubbed
from every record."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

__all__ = ["SecretFilter", "configure_logging"]

#: Secrets read from the environment by libraries (boto3, for the S3 image store): scrubbed
#: wherever they are set.
ENV_SECRETS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


class SecretFilter(logging.Filter):
    """Replace every occurrence of the given secrets in a record with ``***``.

    Installed on the root handlers, so a token that slips into an exception
    message or a library's debug line still never reaches the output.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 8]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        text = message
        for secret in self.secrets:
            text = text.replace(secret, "***")
        if record.exc_info and record.exc_info[1] is not None:
            # Render the traceback now, scrubbed, so the formatter does not re-render it.
            formatter = logging.Formatter()
            rendered = formatter.formatException(record.exc_info)
            for secret in self.secrets:
                rendered = rendered.replace(secret, "***")
            text = f"{text}\n{rendered}"
            record.exc_info = None
            record.exc_text = None
        if text != message or not record.args:
            record.msg, record.args = text, ()
        return True


def _drop_bare_library_info(record: logging.LogRecord) -> bool:
    # Some libraries (open_clip) log progress with bare logging.info() on the root
    # logger; dreamrate's own modules always use named loggers.
    return record.name != "root" or record.levelno >= logging.WARNING


def _json_handler() -> logging.Handler:
    """One JSON object a line on stderr: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``process`` (its pid), ``message``, and ``exc_info`` when a traceback is attached."""
    from pythonjsonlogger.json import JsonFormatter

    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter(
            "{asctime}{levelname}{name}{process}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            timestamp=False,
            datefmt="%Y-%m-%dT%H:%M:%S%z",
            json_ensure_ascii=False,
        )
    )
    return handler


def _rich_handler() -> logging.Handler:
    from rich.console import Console
    from rich.logging import RichHandler

    return RichHandler(
        console=Console(stderr=True),
        show_path=False,
        rich_tracebacks=False,
        log_time_format="[%X]",
    )


def configure_logging(
    level: str = "INFO", *, secrets: Iterable[str] = (), log_format: str = "rich"
) -> None:
    """Send logs to stderr, through rich or as JSON lines (``log_format="json"``), with
    ``secrets`` (and the AWS secrets in the environment) scrubbed."""
    handler = _json_handler() if log_format == "json" else _rich_handler()
    handler.addFilter(SecretFilter([*secrets, *(os.environ.get(n, "") for n in ENV_SECRETS)]))
    handler.addFilter(_drop_bare_library_info)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Libraries that are chatty at INFO.
    # alembic: its plugin set-up logs at import, which commands now do after this runs.
    # botocore/boto3: which credential source it found, at INFO.
    for name in ("discord.gateway", "httpx", "urllib3", "alembic", "botocore", "boto3"):
        logging.getLogger(name).setLevel(max(logging.getLevelName(level), logging.WARNING))
