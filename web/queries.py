"""The web home's reads: a guild's gallery page by page, one image with its ratings, and
the maintainers' figures (what a member rates next is the rating queue's).

Every read of ratings goes through :mod:`dreamrate.ratings.policy` (who counts). The
gallery shows what may be shown to the community: kept images, not flagged by the safety
checker, no report waiting, not made by a member banned there, nothing an erase took out.
Pages are keyset-paginated (``(score, id)`` or ``id`` below the cursor), so page 500
costs what page 1 does.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from dreamrate.aesthetic.predictor import Predictor
from dreamrate.db.models import (
    Flag,
    Image,
    Job,
    JobStatus,
    Rating,
    RatingEvent,
    User,
)
from dreamrate.db.models import Predictor as PredictorRow
from dreamrate.db.types import utcnow
from dreamrate.ratings.policy import counted_ratings, shown_in_guild
from dreamrate.ratings.selection import not_rated_by
from dreamrate.web.ranking import RankingCache

__all__ = [
    "ROW_ID_MAX",
    "Card",
    "GalleryQuery",
    "ImageDetail",
    "gallery_page",
    "image_detail",
    "image_file",
    "maintainer_overview",
    "parse_cursor",
]

#: Our own rows' ids (images, predictors) are INTEGER, 32-bit on PostgreSQL: a bigger one
#: is no row's id on either database (asked about, it would be an error, not a miss).
ROW_ID_MAX = 2**31 - 1
_DIGITS = re.compile(r"[0-9]{1,10}")


@dataclass(frozen=True, slots=True)
class GalleryQuery:
    sort: str = "top"  #: ``top`` (community rating), ``predicted`` (active predictor), ``new``
    text: str = ""  #: a piece of the prompt
    model: str = ""  #: the model's name as the gallery shows it (:mod:`.model_names`)
    #: The models stored on jobs that go by that name (filled from ``model``).
    models: tuple[str, ...] = ()
    since: datetime | None = None
    unrated_by: int | None = None  #: the member's user row id: images they have not rated
    cursor: str = ""
    limit: int = 24


@dataclass(frozen=True, slots=True)
class Card:
    id: int
    width: int
    height: int
    prompt: str
    model: str
    created_at: datetime
    mean: float | None
    ratings: int


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def parse_cursor(sort: str, cursor: str) -> tuple[float, int] | None:
    """``(score, id)`` from a cursor the gallery made; None for the first page.

    Raises
    ------
    ValueError
        for a cursor the gallery did not make: an id that is no image's (beyond 32 bits,
        not digits), a score that is not a number (``nan``, ``inf``; ``-inf`` marks images
        nobody rated).
    """
    if not cursor:
        return None
    if sort == "new":
        return (0.0, _image_id(cursor))
    score, sep, image_id = cursor.partition("_")
    value = float(score)
    if not sep or math.isnan(value) or value == math.inf:
        raise ValueError(f"not a gallery cursor: {cursor!r}")
    return (value, _image_id(image_id))


def _image_id(text: str) -> int:
    if not _DIGITS.fullmatch(text) or not 0 < int(text) <= ROW_ID_MAX:
        raise ValueError(f"not an image id: {text[:20]!r}")
    return int(text)


def _filtered(guild_id: int, query: GalleryQuery) -> Any:
    statement = (
        select(Image.id, Image.width, Image.height, Job.prompt, Job.model, Image.created_at)
        .join(Job, Job.id == Image.job_id)
        .where(shown_in_guild(guild_id))
    )
    if query.text:
        statement = statement.where(Job.prompt.ilike(_like(query.text), escape="\\"))
    if query.model:
        statement = statement.where(Job.model.in_(query.models))
    if query.since is not None:
        statement = statement.where(Image.created_at >= query.since)
    if query.unrated_by is not None:
        statement = statement.where(not_rated_by(query.unrated_by))
    return statement


async def _figures(conn: Any, guild_id: int, ids: list[int]) -> dict[int, tuple[float, int]]:
    """(mean, count) of the counted ratings of these images, now."""
    if not ids:
        return {}
    rows = await conn.execute(
        counted_ratings(
            Rating.image_id, func.avg(Rating.value), func.count(), leaving=True, guilds=[guild_id]
        )
        .where(Rating.image_id.in_(ids))
        .group_by(Rating.image_id)
    )
    return {int(i): (float(m), int(n)) for i, m, n in rows}


#: Ranked ids looked at per query when filters thin the page out.
CHUNK = 400


async def gallery_page(
    engine: AsyncEngine,
    guild_id: int,
    query: GalleryQuery,
    rankings: RankingCache,
    predictor: Predictor | None = None,
) -> tuple[list[Card], str | None]:
    """One page of ``guild_id``'s gallery and the cursor of the next (None at the end).

    "new": keyset on the image id. "top": the cached ranking (:mod:`.ranking`) from the
    cursor on, a chunk of ids at a time through the filters, until the page is full.
    Either way the page's figures are read fresh for its own images."""
    after = parse_cursor(query.sort, query.cursor)
    statement = _filtered(guild_id, query)
    want = query.limit + 1
    async with engine.connect() as conn:
        if query.sort == "new":
            if after is not None:
                statement = statement.where(Image.id < after[1])
            rows = (await conn.execute(statement.order_by(Image.id.desc()).limit(want))).all()
            scores = {}
        else:
            shown = shown_in_guild(guild_id)
            if query.sort == "predicted" and predictor is not None:
                ranking = await rankings.predicted(guild_id, shown, predictor)
            else:
                ranking = await rankings.get(guild_id, shown)
            at = 0 if after is None else ranking.position_after(*after)
            rows, scores = [], {}
            filtered = query.text or query.model or query.since or query.unrated_by is not None
            # Unfiltered, nearly every ranked image is still shown: read just a page's worth.
            size = CHUNK if filtered else want + 4
            while len(rows) < want and at < len(ranking.ids):
                chunk = [int(i) for i in ranking.ids[at : at + size]]
                scores.update(zip(chunk, ranking.scores[at : at + size].tolist(), strict=True))
                found = {r.id: r for r in await conn.execute(statement.where(Image.id.in_(chunk)))}
                rows += [found[i] for i in chunk if i in found][: want - len(rows)]
                at += size
        figures = await _figures(conn, guild_id, [r.id for r in rows[: query.limit]])
    cards = []
    for r in rows[: query.limit]:
        mean, n = figures.get(r.id, (None, 0))
        cards.append(Card(r.id, r.width, r.height, r.prompt, r.model, r.created_at, mean, n))
    if len(rows) <= query.limit:
        return cards, None
    last = rows[query.limit - 1]
    cursor = str(last.id) if query.sort == "new" else f"{scores[last.id]!r}_{last.id}"
    return cards, cursor


@dataclass(frozen=True, slots=True)
class ImageDetail:
    id: int
    guild_id: int
    path: str
    width: int
    height: int
    seed: int
    prompt: str
    negative_prompt: str | None
    model: str
    steps: int
    guidance: float
    scheduler: str
    created_at: datetime
    #: The requester's name, unless they opted out of being shown.
    requester: str | None
    distribution: dict[float, int]
    mean: float | None
    mine: float | None


async def image_file(
    engine: AsyncEngine, image_id: int, moderates: Callable[[int], bool]
) -> tuple[int, str, str] | None:
    """``(guild id, path in the store, sha256)`` of an image its guild's members may see
    (its moderators also those flagged or reported, which they must judge), else None."""
    async with engine.connect() as conn:
        guild_id = await conn.scalar(
            select(Job.guild_id).join(Image, Image.job_id == Job.id).where(Image.id == image_id)
        )
        if guild_id is None:
            return None
        shown = shown_in_guild(int(guild_id), to_moderators=moderates(int(guild_id)))
        row = (
            await conn.execute(
                select(Image.path, Image.sha256)
                .join(Job, Job.id == Image.job_id)
                .where(Image.id == image_id, shown)
            )
        ).first()
    if row is None:
        return None
    return int(guild_id), str(row.path), str(row.sha256)


async def image_detail(
    engine: AsyncEngine, image_id: int, *, member_user_id: int | None
) -> ImageDetail | None:
    """An image of the gallery with its ratings; None when it is not shown (removed,
    flagged, reported, erased) or unknown."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(
                    Image.id,
                    Image.path,
                    Image.width,
                    Image.height,
                    Image.seed,
                    Image.created_at,
                    Job.guild_id,
                    Job.prompt,
                    Job.negative_prompt,
                    Job.model,
                    Job.steps,
                    Job.guidance,
                    Job.scheduler,
                    User.name,
                    User.opted_out,
                )
                .join(Job, Job.id == Image.job_id)
                .join(User, User.id == Job.requester_id)
                .where(Image.id == image_id, Job.guild_id.is_not(None))
            )
        ).first()
        if row is None:
            return None
        shown = await conn.scalar(
            select(Image.id)
            .join(Job, Job.id == Image.job_id)
            .where(Image.id == image_id, shown_in_guild(int(row.guild_id)))
        )
        if shown is None:
            return None
        counts = await conn.execute(
            counted_ratings(Rating.value, func.count(), leaving=True, guilds=[int(row.guild_id)])
            .where(Rating.image_id == image_id)
            .group_by(Rating.value)
        )
        distribution = {float(v): int(n) for v, n in counts}
        mine = None
        if member_user_id is not None:
            mine = await conn.scalar(
                select(Rating.value).where(
                    Rating.image_id == image_id, Rating.user_id == member_user_id
                )
            )
    total = sum(distribution.values())
    mean = sum(v * n for v, n in distribution.items()) / total if total else None
    return ImageDetail(
        id=row.id,
        guild_id=int(row.guild_id),
        path=row.path,
        width=row.width,
        height=row.height,
        seed=int(row.seed),
        prompt=row.prompt,
        negative_prompt=row.negative_prompt,
        model=row.model,
        steps=row.steps,
        guidance=row.guidance,
        scheduler=row.scheduler,
        created_at=row.created_at,
        requester=None if row.opted_out else row.name,
        distribution=distribution,
        mean=mean,
        mine=None if mine is None else float(mine),
    )


@dataclass(frozen=True, slots=True)
class Overview:
    queue: dict[str, int]
    workers: list[dict[str, Any]]
    failures: list[dict[str, Any]]
    predictors: list[dict[str, Any]]
    ratings_per_day: list[tuple[str, int]]
    raters_per_day: list[tuple[str, int]]
    wait_per_day: list[tuple[str, float]]
    open_reports: int


def _day(column: Any, dialect: str) -> Any:
    if dialect == "postgresql":
        return func.to_char(func.date_trunc("day", column), "YYYY-MM-DD")
    return func.strftime("%Y-%m-%d", column)


async def maintainer_overview(engine: AsyncEngine, *, days: int = 30) -> Overview:
    """Queue, workers, failures, predictors and the last ``days`` of activity."""
    now = utcnow()
    since = now - timedelta(days=days)
    dialect = engine.dialect.name
    async with engine.connect() as conn:
        queue = {
            str(status): int(n)
            for status, n in await conn.execute(
                select(Job.status, func.count()).group_by(Job.status)
            )
        }
        workers = [
            {
                "worker": str(r.lease_owner),
                "heartbeat": r.heartbeat,
                "running": int(r.running),
            }
            for r in await conn.execute(
                select(
                    Job.lease_owner,
                    func.max(Job.heartbeat_at).label("heartbeat"),
                    func.count().label("running"),
                )
                .where(Job.lease_owner.is_not(None), Job.heartbeat_at >= now - timedelta(hours=1))
                .group_by(Job.lease_owner)
                .order_by(func.max(Job.heartbeat_at).desc())
            )
        ]
        done_hour = dict(
            (
                await conn.execute(
                    select(Job.lease_owner, func.count())
                    .where(
                        Job.status == JobStatus.DONE, Job.finished_at >= now - timedelta(hours=1)
                    )
                    .group_by(Job.lease_owner)
                )
            ).all()
        )
        for worker in workers:
            worker["done_last_hour"] = int(done_hour.get(worker["worker"], 0))
        failures = [
            {"id": r.id, "error": r.error or "", "finished_at": r.finished_at, "model": r.model}
            for r in await conn.execute(
                select(Job.id, Job.error, Job.finished_at, Job.model)
                .where(Job.status == JobStatus.FAILED)
                .order_by(Job.id.desc())
                .limit(20)
            )
        ]
        predictors = [
            {
                "id": p.id,
                "name": p.name,
                "active": p.active,
                "embedding_model": p.embedding_model,
                "metrics": dict(p.metrics or {}),
                "created_at": p.created_at,
            }
            for p in await conn.execute(
                select(
                    PredictorRow.id,
                    PredictorRow.name,
                    PredictorRow.active,
                    PredictorRow.embedding_model,
                    PredictorRow.metrics,
                    PredictorRow.created_at,
                ).order_by(PredictorRow.id.desc())
            )
        ]
        day = _day(RatingEvent.received_at, dialect)
        per_day = (
            await conn.execute(
                select(
                    day.label("day"),
                    func.count(),
                    func.count(RatingEvent.discord_user_id.distinct()),
                )
                .where(RatingEvent.received_at >= since)
                .group_by(day)
                .order_by(day)
            )
        ).all()
        job_day = _day(Job.created_at, dialect)
        if dialect == "postgresql":
            wait = func.avg(func.extract("epoch", Job.started_at - Job.created_at))
        else:
            wait = func.avg(
                (func.julianday(Job.started_at) - func.julianday(Job.created_at)) * 86400
            )
        waits = (
            await conn.execute(
                select(job_day.label("day"), wait)
                .where(Job.created_at >= since, Job.started_at.is_not(None))
                .group_by(job_day)
                .order_by(job_day)
            )
        ).all()
        reports = await conn.scalar(select(func.count()).where(Flag.resolved_at.is_(None)))
    return Overview(
        queue=queue,
        workers=workers,
        failures=failures,
        predictors=predictors,
        ratings_per_day=[(str(d), int(n)) for d, n, _ in per_day],
        raters_per_day=[(str(d), int(r)) for d, _, r in per_day],
        wait_per_day=[(str(d), float(w or 0)) for d, w in waits],
        open_reports=int(reports or 0),
    )
