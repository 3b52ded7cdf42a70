"""Secrets never reach log output, even inside exception tracebacks."""

from __future__ import annotations

import io
import logging

from dreamrate.core.log import SecretFilter

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.Gabcde.very-secret-token"


def _capture() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(SecretFilter([TOKEN]))
    logger = logging.getLogger(f"test-secret-{id(stream)}")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def test_secret_in_message_and_args_is_scrubbed() -> None:
    logger, stream = _capture()
    logger.info("connecting with %s", TOKEN)
    logger.warning(f"token={TOKEN}")
    logger.info("nothing to hide: %d", 5)
    out = stream.getvalue()
    assert TOKEN not in out
    assert out.count("***") == 2
    assert "nothing to hide: 5" in out


def test_secret_in_traceback_is_scrubbed() -> None:
    logger, stream = _capture()
    try:
        raise RuntimeError(f"login failed for {TOKEN}")
    except RuntimeError:
        logger.exception("bot crashed")
    out = stream.getvalue()
    assert "RuntimeError: login failed for ***" in out
    assert TOKEN not in out
