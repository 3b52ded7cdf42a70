"""The web home's outer guard: every request's size is bounded before any route sees it, and
every answer carries the security headers.

A body is counted as it streams in, whether or not it declares a ``Content-Length``
(chunked bodies do not), and read at most to :data:`MAX_BODY` bytes: one byte more and the
answer is 413 at once and the connection is closed, so nothing past the limit is read, kept
in memory or spooled to disk, logged in or not. A route then gets the body from memory.
"""

from __future__ import annotations

import logging

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["HEADERS", "MAX_BODY", "MAX_QUERY", "Guard"]

logger = logging.getLogger(__name__)

MAX_QUERY = 2048
#: Every form and click is small; a request body past this is refused before it is read.
MAX_BODY = 64 * 1024
HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
        "frame-ancestors 'none'; form-action 'self' {authorize}"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}


class TooLarge(Exception):
    """The request's body went past :data:`MAX_BODY`."""


async def read_bounded(receive: Receive, limit: int) -> tuple[bytes, Message | None]:
    """The whole body (at most ``limit`` bytes) and the disconnect that cut it short, if any.

    Raises
    ------
    TooLarge
        at the first chunk that takes the body past ``limit``.
    """
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(parts), message
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts), None


class Guard:
    """Refuses oversized query strings (414) and bodies (413), and adds the security
    headers to every answer."""

    def __init__(self, app: ASGIApp, authorize_origin: str, max_body: int = MAX_BODY) -> None:
        self.app = app
        self.max_body = max_body
        self.headers = [
            (k.encode(), v.format(authorize=authorize_origin).encode()) for k, v in HEADERS.items()
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = self._with_headers(send)
        if len(scope.get("query_string", b"")) > MAX_QUERY:
            await Response("Query string too long.", status_code=414)(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        try:
            if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
                raise TooLarge
            body, disconnect = await read_bounded(receive, self.max_body)
        except TooLarge:
            # Closing the connection is the only way not to read the rest.
            refusal = Response(
                "Request body too large.", status_code=413, headers={"Connection": "close"}
            )
            await refusal(scope, receive, send)
            return
        given = False

        async def replay() -> Message:
            nonlocal given
            if not given:
                given = True
                return disconnect or {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _with_headers(self, send: Send) -> Send:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.setdefault("headers", [])}
                extra = [(k, v) for k, v in self.headers if k not in have]
                message["headers"] = [*message["headers"], *extra]
            await send(message)

        return sending
