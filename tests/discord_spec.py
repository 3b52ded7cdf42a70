"""Discord's published OpenAPI description as the judge of what the local Discord answered.

``tests/specs/openapi.json`` is ``specs/openapi.json`` of discord/discord-api-spec (MIT,
``tests/specs/LICENSE``). The local server (:mod:`dreamrate.fake_discord.traffic`) writes
every REST answer it sends as one JSON line: route template, method, status and body. This
module checks each against the schema the spec gives that operation and status; a status the
operation does not document is a deviation too. Validators are built once per operation and
status and cached, so checking a test's traffic costs about a millisecond per answer.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = ["Deviation", "SpecChecker", "checker", "read_traffic"]

SPEC_PATH = Path(__file__).resolve().parent / "specs" / "openapi.json"
_URI = "urn:discord-api-spec"

#: Routes Discord documents outside the OpenAPI description (its OAuth2 pages), with the
#: bodies those pages give: the token exchange answers RFC 6749's shapes.
OFF_SPEC: dict[tuple[str, str], dict[int | str, dict[str, Any]]] = {
    ("POST", "/oauth2/token"): {
        200: {
            "type": "object",
            "required": ["access_token", "token_type", "expires_in", "refresh_token", "scope"],
            "properties": {
                "access_token": {"type": "string"},
                "token_type": {"const": "Bearer"},
                "expires_in": {"type": "integer"},
                "refresh_token": {"type": "string"},
                "scope": {"type": "string"},
            },
        },
        "4XX": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
        },
    },
}


@dataclass(frozen=True)
class Deviation:
    """One way an answer differs from the spec: where in the body, and how."""

    method: str
    route: str
    status: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.method} {self.route} -> {self.status}: {self.field}: {self.message}"


def _patched(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with its known errata fixed, each where Discord's reference documents
    otherwise (and Discord and discord.py behave so):

    * field errors inside ``errors`` carry string codes such as ``BASE_TYPE_MAX_LENGTH``
      (the "Error Messages" reference), where the schema reuses the top-level ``Error`` with
      an integer code;
    * channel type 16, GUILD_MEDIA (the "Channel" reference), is missing from
      ``ChannelTypes``; discord.py lists it in ``channel_types`` of a text-channel option.
    """
    spec = copy.deepcopy(spec)
    schemas = spec["components"]["schemas"]
    schemas["ChannelTypes"]["oneOf"].append({"title": "GUILD_MEDIA", "const": 16})
    schemas["FieldError"] = {
        "type": "object",
        "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
    }
    schemas["InnerErrors"]["properties"]["_errors"]["items"] = {
        "$ref": "#/components/schemas/FieldError"
    }
    return spec


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def _wrong_kind(errors: list[ValidationError]) -> bool:
    """Whether a ``oneOf`` branch failed on its discriminator (``type`` of another kind)."""
    return any(
        e.validator in ("enum", "const") and list(e.relative_path) == ["type"] for e in errors
    )


def _cause(error: ValidationError) -> ValidationError:
    """The error that says what is wrong: inside ``oneOf``/``anyOf``, the branch of the
    instance's own kind (its ``type``), else the branch that came closest."""
    while error.context:
        branches: dict[Any, list[ValidationError]] = {}
        for e in error.context:
            branches.setdefault(e.relative_schema_path[0], []).append(e)
        candidates = [b for b in branches.values() if not _wrong_kind(b)] or list(branches.values())
        error = min(candidates, key=len)[0]
    return error


def _field(error: ValidationError) -> str:
    path = "$"
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


class SpecChecker:
    """Checks recorded answers against one OpenAPI document."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = _patched(spec)
        resource = Resource.from_contents(self.spec, default_specification=DRAFT202012)
        self._registry: Registry[Any] = Registry().with_resource(_URI, resource)
        self._validators: dict[tuple[str, str, int], Draft202012Validator | str | None] = {}

    def _response_pointer(self, method: str, route: str, status: int) -> str | None:
        """JSON pointer to the schema of the body, None for an empty body; raises KeyError
        (with why) where the spec has no such operation or status."""
        operation = self.spec["paths"].get(route, {}).get(method.lower())
        if operation is None:
            raise KeyError("no such operation in Discord's spec")
        responses = operation["responses"]
        code = next(
            (c for c in (str(status), f"{str(status)[0]}XX", "default") if c in responses), None
        )
        if code is None:
            raise KeyError(f"status {status} is not one this operation answers")
        pointer = f"/paths/{_escape(route)}/{method.lower()}/responses/{code}"
        response = responses[code]
        if "$ref" in response:
            pointer = response["$ref"].removeprefix("#")
            response = self.spec["components"]["responses"][pointer.rsplit("/", 1)[-1]]
        if "application/json" not in response.get("content", {}):
            return None
        return f"{pointer}/content/application~1json/schema"

    def _validator(self, method: str, route: str, status: int) -> Draft202012Validator | str | None:
        """The validator of an answer's body; None: the body must be empty; a string: why
        no answer with this status is possible there."""
        key = (method, route, status)
        if key not in self._validators:
            off = OFF_SPEC.get((method, route))
            if off is not None:
                schema = off.get(status) or off.get(f"{str(status)[0]}XX")
                self._validators[key] = (
                    Draft202012Validator(schema)
                    if schema
                    else f"status {status} is not one this route answers"
                )
            else:
                try:
                    pointer = self._response_pointer(method, route, status)
                except KeyError as exc:
                    self._validators[key] = str(exc.args[0])
                else:
                    self._validators[key] = (
                        None
                        if pointer is None
                        else Draft202012Validator(
                            {"$ref": f"{_URI}#{pointer}"},
                            registry=self._registry,
                            format_checker=Draft202012Validator.FORMAT_CHECKER,
                        )
                    )
        return self._validators[key]

    def check(self, record: dict[str, Any]) -> list[Deviation]:
        """Every deviation of one recorded answer (``route``, ``method``, ``status``, ``body``)."""
        method, route, status = record["method"], record["route"], int(record["status"])
        body = record.get("body")

        def deviation(field: str, message: str) -> Deviation:
            return Deviation(method, route, status, field, message)

        validator = self._validator(method, route, status)
        if isinstance(validator, str):
            return [deviation("(operation)", validator)]
        if validator is None:
            return [] if body is None else [deviation("$", "the spec gives this answer no body")]
        if body is None:
            return [deviation("$", "the spec gives this answer a JSON body; it had none")]
        found = []
        for error in validator.iter_errors(body):
            cause = _cause(error)
            found.append(deviation(_field(cause), cause.message[:300]))
        return found

    def check_all(self, records: Iterable[dict[str, Any]]) -> Counter[Deviation]:
        """Each distinct deviation in ``records``, with how many answers showed it."""
        found: Counter[Deviation] = Counter()
        for record in records:
            found.update(self.check(record))
        return found


@cache
def checker() -> SpecChecker:
    """The checker of the vendored spec (read and compiled once per process)."""
    return SpecChecker(json.loads(SPEC_PATH.read_text(encoding="utf-8")))


def read_traffic(folder: Path) -> Iterator[dict[str, Any]]:
    """The answers recorded under ``folder`` (one JSONL file per server process)."""
    for path in sorted(folder.glob("*.jsonl")):
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                if line.strip():
                    yield json.loads(line)
