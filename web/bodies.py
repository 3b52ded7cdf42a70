"""Reading what a form or a click sent, bounded: the guard (:mod:`.guard`) already stopped
any body past 64 KB; a click's JSON is at most 4 KB, a form holds no files and few fields."""

from __future__ import annotations

import json
from typing import Any

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request

__all__ = ["MAX_CLICK", "MAX_FIELDS", "read_form", "read_json_object"]

#: A click is a JSON object of two or three short fields.
MAX_CLICK = 4096
#: The biggest form (the moderation settings) has seven fields.
MAX_FIELDS = 32


async def read_json_object(request: Request, limit: int = MAX_CLICK) -> dict[str, Any] | None:
    """The JSON object sent, or None when it is not one.

    Raises
    ------
    HTTPException
        413 past ``limit`` bytes.
    """
    body = await request.body()
    if len(body) > limit:
        raise HTTPException(413, f"A click is at most {limit} bytes.")
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


async def read_form(request: Request) -> FormData:
    """The form sent: no file parts, at most :data:`MAX_FIELDS` fields (else 400)."""
    return await request.form(max_files=0, max_fields=MAX_FIELDS, max_part_size=64 * 1024)
