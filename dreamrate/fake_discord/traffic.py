"""What the local Discord answered, written down for the test suite to hold against Discord's spec.

When ``FAKE_DISCORD_TRAFFIC_DIR`` names a folder, every REST answer is appended to
``<folder>/traffic-<pid>.jsonl`` as ``{"method", "route", "path", "status", "body"}``, the
route being the spec's template (``/channels/{channel_id}/messages``). The variable is read at
each answer, so a test session can point each test at its own folder, and a server in a
child process (``dreamrate demo``) writes beside it. Unset, nothing is written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["TRAFFIC_ENV", "record"]

TRAFFIC_ENV = "FAKE_DISCORD_TRAFFIC_DIR"


def record(method: str, route: str, path: str, status: int, body: bytes | None) -> None:
    """Append one answer to this process's log, if one is wanted."""
    folder = os.environ.get(TRAFFIC_ENV)
    if not folder:
        return
    parsed: Any = json.loads(body) if body else None
    line = json.dumps(
        {"method": method, "route": route, "path": path, "status": status, "body": parsed}
    )
    Path(folder).mkdir(parents=True, exist_ok=True)
    with open(Path(folder) / f"traffic-{os.getpid()}.jsonl", "a", encoding="utf-8") as log:
        log.write(line + "\n")
