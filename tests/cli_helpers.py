"""Running the CLI in this process, as the installed script runs it, and checking that a
refused command said one line and left nothing behind (the ``cli`` fixture is in conftest)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["Run", "refused", "tree"]


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str
    #: Paths under the test's folder that the command created or removed.
    changed: set[str]


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def refused(result: Run, *needles: str) -> str:
    """The one error line of a refused command that left nothing behind."""
    assert "Traceback" not in result.err, result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert result.code == 2, result.err
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not result.changed, f"left behind: {sorted(result.changed)}"
    return lines[0]
