"""Opt-out lists a manifest honours before anything is downloaded: URLs and domains.

Both are plain text, one entry a line, ``#`` starting a comment. A URL matches exactly (after
trimming whitespace); a domain matches its host and every host below it (``example.com``
drops ``example.com`` and ``cdn.example.com``, not ``badexample.com``), case-insensitively,
with any ``www.`` in the list ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from dreamrate.core.errors import DreamrateError

__all__ = ["ExclusionError", "Exclusions", "load_exclusions"]


class ExclusionError(DreamrateError):
    """An exclusion list that cannot be read."""


def _entries(path: Path, option: str) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ExclusionError(f"{option}: {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ExclusionError(f"{option}: cannot read {path} ({type(exc).__name__})") from None
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def _ascii(host: str) -> str:
    """``host`` lowercased in its ASCII (IDNA) form, so ``bücher.example`` and
    ``xn--bcher-kva.example`` are one domain."""
    host = host.lower().rstrip(".")
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def _host(url: str) -> str:
    try:
        return _ascii(urlsplit(url).hostname or "")
    except ValueError:  # a malformed URL (e.g. a bad IPv6 literal) has no host to match
        return ""


@dataclass
class Exclusions:
    urls: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()
    #: Rows dropped so far, by list.
    dropped: dict[str, int] = field(default_factory=lambda: {"urls": 0, "domains": 0})

    def __bool__(self) -> bool:
        return bool(self.urls or self.domains)

    def _blocked_host(self, host: str) -> bool:
        parts = host.split(".")
        return any(".".join(parts[i:]) in self.domains for i in range(len(parts)))

    def filter(self, table: Any) -> Any:
        """``table`` without the rows whose ``url`` is listed or on a listed domain."""
        if not self or "url" not in table.column_names:
            return table
        urls = table.column("url").to_pylist()
        by_url = np.fromiter((u is not None and u.strip() in self.urls for u in urls), bool)
        by_domain = np.zeros(len(urls), dtype=bool)
        if self.domains:
            hosts = (
                _host(u) if u and not listed else "" for u, listed in zip(urls, by_url, strict=True)
            )
            by_domain = np.fromiter((bool(h) and self._blocked_host(h) for h in hosts), bool)
        self.dropped["urls"] += int(by_url.sum())
        self.dropped["domains"] += int(by_domain.sum())
        drop = by_url | by_domain
        return table.filter(~drop) if drop.any() else table


def load_exclusions(urls_file: Path | None, domains_file: Path | None) -> Exclusions:
    """The lists named by ``--exclude-urls`` and ``--exclude-domains`` (either may be None)."""
    urls = frozenset(_entries(urls_file, "--exclude-urls")) if urls_file else frozenset()
    domains: set[str] = set()
    for entry in _entries(domains_file, "--exclude-domains") if domains_file else []:
        # A URL, host:port or *.domain all name the domain.
        host = _host(entry) if "//" in entry else _ascii(entry.split("/", 1)[0].split(":", 1)[0])
        host = host.removeprefix("*.")
        domains.add(host.removeprefix("www."))
    return Exclusions(urls, frozenset(d for d in domains if d))
