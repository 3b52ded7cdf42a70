"""Discord's documented limits on what a request may carry, as the local Discord enforces them.

Each check returns Discord's ``errors`` object of an Invalid Form Body answer (code 50035):
field path -> ``{"_errors": [{"code": ..., "message": ...}]}``, or None when the request is
within the limits. The figures are the ones Discord's reference documents: message content
2,000 characters; at most 10 embeds, 6,000 characters in all, a title of 256, a description
of 4,096, 25 fields (name 256, value 1,024), footer 2,048, author name 256; at most 5 action
rows of 5 components; command and option names of 1-32 lower-case letters, digits, ``-`` and
``_``, descriptions of 1-100 characters, at most 25 options or choices; message history
``limit`` 1-100.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "MAX_CONTENT",
    "MAX_EMBEDS",
    "command_errors",
    "history_errors",
    "is_empty_message",
    "message_errors",
    "upload_limit",
]

MAX_CONTENT = 2000
MAX_EMBEDS = 10
MAX_EMBED_TOTAL = 6000
#: Embed field -> its longest length.
EMBED_LENGTHS = {"title": 256, "description": 4096}
#: Discord's upload limit by a guild's boost tier (DMs: tier 0).
UPLOAD_LIMITS = {
    0: 10 * 1024 * 1024,
    1: 10 * 1024 * 1024,
    2: 50 * 1024 * 1024,
    3: 100 * 1024 * 1024,
}
#: CHAT_INPUT names: Discord's ``^[-_\p{L}\p{N}\p{sc=Deva}\p{sc=Thai}]{1,32}$``, lower case.
_NAME = re.compile(r"^[-_\w]{1,32}$")

Errors = dict[str, Any]


def upload_limit(premium_tier: int) -> int:
    return UPLOAD_LIMITS.get(premium_tier, UPLOAD_LIMITS[0])


def _error(code: str, message: str) -> dict[str, Any]:
    return {"_errors": [{"code": code, "message": message}]}


def _too_long(limit: int) -> dict[str, Any]:
    return _error("BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")


def _put(errors: Errors, path: list[str | int], error: dict[str, Any]) -> None:
    node = errors
    for part in path[:-1]:
        node = node.setdefault(str(part), {})
    node[str(path[-1])] = error


def _embed_errors(embeds: Any, errors: Errors) -> None:
    if not isinstance(embeds, list):
        return
    if len(embeds) > MAX_EMBEDS:
        _put(errors, ["embeds"], _too_long(MAX_EMBEDS))
        return
    total = 0
    for k, embed in enumerate(embeds):
        if not isinstance(embed, dict):
            _put(
                errors,
                ["embeds", k],
                _error("MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType"),
            )
            continue
        for name, limit in EMBED_LENGTHS.items():
            text = embed.get(name) or ""
            total += len(text)
            if len(text) > limit:
                _put(errors, ["embeds", k, name], _too_long(limit))
        fields = embed.get("fields") or []
        if len(fields) > 25:
            _put(errors, ["embeds", k, "fields"], _too_long(25))
        for j, item in enumerate(fields[:25]):
            for name, limit in (("name", 256), ("value", 1024)):
                text = str(item.get(name) or "")
                total += len(text)
                if not text:
                    _put(
                        errors,
                        ["embeds", k, "fields", j, name],
                        _error("BASE_TYPE_REQUIRED", "This field is required"),
                    )
                elif len(text) > limit:
                    _put(errors, ["embeds", k, "fields", j, name], _too_long(limit))
        for part, name, limit in (("footer", "text", 2048), ("author", "name", 256)):
            text = str((embed.get(part) or {}).get(name) or "")
            total += len(text)
            if len(text) > limit:
                _put(errors, ["embeds", k, part, name], _too_long(limit))
    if total > MAX_EMBED_TOTAL and "embeds" not in errors:
        _put(
            errors,
            ["embeds"],
            _error("MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000"),
        )


def _component_errors(rows: Any, errors: Errors) -> None:
    if not isinstance(rows, list):
        return
    if len(rows) > 5:
        _put(errors, ["components"], _too_long(5))
        return
    for k, row in enumerate(rows):
        children = row.get("components") or [] if isinstance(row, dict) else []
        if len(children) > 5:
            _put(errors, ["components", k, "components"], _too_long(5))
        for j, child in enumerate(children[:5]):
            for name, limit in (("label", 80), ("custom_id", 100)):
                if len(str(child.get(name) or "")) > limit:
                    _put(errors, ["components", k, "components", j, name], _too_long(limit))


def message_errors(payload: dict[str, Any]) -> Errors | None:
    """What Discord refuses in a message body (create or edit), or None."""
    errors: Errors = {}
    content = payload.get("content")
    if isinstance(content, str) and len(content) > MAX_CONTENT:
        _put(errors, ["content"], _too_long(MAX_CONTENT))
    _embed_errors(payload.get("embeds"), errors)
    _component_errors(payload.get("components"), errors)
    return errors or None


def is_empty_message(payload: dict[str, Any], files: int) -> bool:
    """Whether a new message would show nothing (Discord: 50006, Cannot send an empty message)."""
    return not (
        payload.get("content")
        or payload.get("embeds")
        or payload.get("components")
        or payload.get("sticker_ids")
        or payload.get("poll")
        or files
    )


def _option_errors(options: Any, path: list[str | int], errors: Errors) -> None:
    if not isinstance(options, list):
        return
    if len(options) > 25:
        _put(errors, [*path, "options"], _too_long(25))
        return
    for k, option in enumerate(options):
        where: list[str | int] = [*path, "options", k]
        _name_errors(option, where, errors, chat_input=True)
        if len(option.get("choices") or []) > 25:
            _put(errors, [*where, "choices"], _too_long(25))
        _option_errors(option.get("options"), where, errors)


def _name_errors(
    item: dict[str, Any], path: list[str | int], errors: Errors, *, chat_input: bool
) -> None:
    name = str(item.get("name") or "")
    if chat_input and (not _NAME.match(name) or name != name.lower()):
        _put(
            errors,
            [*path, "name"],
            _error("APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid"),
        )
    elif not chat_input and not 1 <= len(name) <= 32:
        _put(
            errors,
            [*path, "name"],
            _error("BASE_TYPE_BAD_LENGTH", "Must be between 1 and 32 in length."),
        )
    description = str(item.get("description") or "")
    if chat_input and not 1 <= len(description) <= 100:
        _put(
            errors,
            [*path, "description"],
            _error("BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."),
        )
    elif not chat_input and description:
        _put(
            errors,
            [*path, "description"],
            _error(
                "APPLICATION_COMMAND_INVALID_DESCRIPTION",
                "Context menu commands cannot have description",
            ),
        )


def command_errors(commands: Any) -> Errors | None:
    """What Discord refuses in a bulk overwrite of application commands, or None."""
    errors: Errors = {}
    if not isinstance(commands, list):
        return {"_errors": [{"code": "BASE_TYPE_ARRAY", "message": "Must be an array."}]}
    if len(commands) > 100:
        return _too_long(100)
    for k, command in enumerate(commands):
        chat_input = command.get("type", 1) in (1, None)
        _name_errors(command, [k], errors, chat_input=chat_input)
        if chat_input:
            _option_errors(command.get("options"), [k], errors)
    names = [(c.get("type", 1) or 1, c.get("name")) for c in commands]
    for k, key in enumerate(names):
        if names.index(key) != k:
            _put(
                errors,
                [k, "name"],
                _error(
                    "APPLICATION_COMMANDS_DUPLICATE_NAME",
                    "Application command names must be unique",
                ),
            )
    return errors or None


def history_errors(query: Any) -> Errors | None:
    """What Discord refuses in a message-history query (``limit``, one of around/before/after)."""
    errors: Errors = {}
    raw = query.get("limit")
    if raw is not None:
        try:
            limit = int(raw)
        except ValueError:
            _put(errors, ["limit"], _error("NUMBER_TYPE_COERCE", f'Value "{raw}" is not int.'))
        else:
            if not 1 <= limit <= 100:
                _put(
                    errors,
                    ["limit"],
                    _error(
                        "NUMBER_TYPE_MAX" if limit > 100 else "NUMBER_TYPE_MIN",
                        f"Int must be {'less than or equal to 100' if limit > 100 else 'greater than or equal to 1'}.",
                    ),
                )
    for name in ("around", "before", "after"):
        value = query.get(name)
        if value is not None and not value.isdigit():
            _put(errors, [name], _error("NUMBER_TYPE_COERCE", f'Value "{value}" is not snowflake.'))
    return errors or None
