"""SQLAlchemy 2 typed models: the whole dreamrate schema.

Only Alembic migrations change the schema (``db/migrations``); a test checks
that models and migrations never drift apart.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from dreamrate.db.types import BigId, JSONType, Snowflake, UTCDateTime, utcnow

__all__ = [
    "Base",
    "Choice",
    "ChoiceEvent",
    "ComparisonPost",
    "Embedding",
    "Flag",
    "GuildBan",
    "GuildSettings",
    "Image",
    "ImagePost",
    "Job",
    "JobStatus",
    "PendingPost",
    "Predictor",
    "Rating",
    "RatingEvent",
    "RatingEventKind",
    "ReactionTombstone",
    "User",
    "WebSession",
]

# Deterministic constraint names, so migrations can refer to them on both backends.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # Stored as the lowercase value in a VARCHAR with a CHECK: no native PG
    # enum type, so adding a status later is a plain migration on both backends.
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


class JobStatus(enum.StrEnum):
    """Where a generation job is in its life."""

    QUEUED = "queued"  #: waiting for a worker
    RUNNING = "running"  #: claimed by a worker holding a lease
    DONE = "done"  #: images stored (delivery to Discord is tracked by ``delivered_at``)
    FAILED = "failed"  #: gave up; ``error`` says why
    CANCELLED = "cancelled"  #: cancelled by its requester or a moderator


class RatingEventKind(enum.StrEnum):
    """What a raw rating event did."""

    ADD = "add"  #: a rating emoji was added (gateway event)
    REMOVE = "remove"  #: a rating emoji was removed (gateway event)
    BACKFILL_ADD = "backfill_add"  #: found on Discord by backfill, missing here
    BACKFILL_REMOVE = "backfill_remove"  #: recorded here, gone from Discord


class User(Base):
    """A community member (or an operator using the CLI, with no Discord id)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    discord_id: Mapped[int | None] = mapped_column(Snowflake, unique=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    #: Banned everywhere (set before bans were per guild, or by an operator); moderators
    #: ban per guild (:class:`GuildBan`).
    banned: Mapped[bool] = mapped_column(Boolean, default=False)
    opted_out: Mapped[bool] = mapped_column(Boolean, default=False)
    #: When the user erased their ratings; their data stays out of every dataset.
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Set at erase and at opt-in: reactions the bot received before it never count.
    counted_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The next full backfill turns this member's reactions that the log lacks into
    #: tombstones: they were made before an erase or while opted out.
    baseline_pending: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Round-robin fairness: the last time a batch served this user.
    last_served_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class GuildSettings(Base):
    """Per-server configuration set by moderators with ``/admin``."""

    __tablename__ = "guild_settings"

    guild_id: Mapped[int] = mapped_column(Snowflake, primary_key=True, autoincrement=False)
    #: Channel ids where ``/dream`` is allowed; empty means everywhere.
    allowed_channel_ids: Mapped[list[int]] = mapped_column(JSONType, default=list)
    feed_channel_id: Mapped[int | None] = mapped_column(Snowflake)
    feed_interval_minutes: Mapped[int | None] = mapped_column(Integer)
    #: Percent of feed posts that are comparisons of two images (None or 0: ratings only).
    feed_compare_percent: Mapped[int | None] = mapped_column(Integer)
    #: The feed keeps one arena round going in its channel (a new one when the last closes).
    feed_arena: Mapped[bool | None] = mapped_column(Boolean)
    #: Terms refused in prompts here, on top of DREAMRATE_GENERATION_BLOCKED_TERMS.
    blocked_terms: Mapped[list[str] | None] = mapped_column(JSONType)
    #: Candidates rendered per requested image when ``/dream`` gives no ``best_of`` (None: 1).
    best_of: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class GuildBan(Base):
    """A member banned by one guild's moderators: they may not generate or rate there, and
    their ratings of that guild's images do not count. Other guilds are not affected."""

    __tablename__ = "guild_bans"

    guild_id: Mapped[int] = mapped_column(Snowflake, primary_key=True, autoincrement=False)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Job(Base):
    """One ``/dream`` request: a prompt and its parameters, queued for a worker."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_queue", "status", "priority", "created_at"),
        Index("ix_jobs_requester_status", "requester_id", "status"),
        # The web gallery: a guild's images, newest first.
        Index("ix_jobs_guild_id_id", "guild_id", "id"),
        CheckConstraint("num_images >= 1", name="num_images_positive"),
        CheckConstraint("width > 0 AND height > 0", name="size_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    requester_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    guild_id: Mapped[int | None] = mapped_column(Snowflake)
    channel_id: Mapped[int | None] = mapped_column(Snowflake)

    prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str | None] = mapped_column(Text)
    # The fields a batch must share are columns, so a claim can group on them.
    model: Mapped[str] = mapped_column(String(300))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    steps: Mapped[int] = mapped_column(Integer)
    guidance: Mapped[float] = mapped_column(Float)
    scheduler: Mapped[str] = mapped_column(String(64), default="default")
    num_images: Mapped[int] = mapped_column(Integer, default=1)
    #: Candidates rendered per requested image; the active predictor keeps the best.
    best_of: Mapped[int] = mapped_column(Integer, default=1)
    #: Seed of image 0; image i uses ``seed + i`` (always recorded).
    seed: Mapped[int] = mapped_column(Snowflake)

    status: Mapped[JobStatus] = mapped_column(
        _enum(JobStatus, "job_status"), default=JobStatus.QUEUED
    )
    priority: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)

    #: The Discord interaction that asked for it: a retried enqueue finds this job again.
    interaction_id: Mapped[int | None] = mapped_column(Snowflake, unique=True)
    #: Discord interaction token for follow-ups; valid 15 minutes, then plain messages.
    interaction_token: Mapped[str | None] = mapped_column(Text)
    interaction_token_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    requester: Mapped[User] = relationship(lazy="raise")
    images: Mapped[list[Image]] = relationship(
        back_populates="job", order_by="Image.index", lazy="raise"
    )


class Image(Base):
    """One generated image, stored content-addressed and posted as its own message."""

    __tablename__ = "images"
    __table_args__ = (
        # A late, lease-less worker completing a job again can never add a second copy.
        UniqueConstraint("job_id", "index", name="uq_images_job_index"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Snowflake)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    #: Relative to the data directory, e.g. ``images/ab/<sha256>.png``.
    path: Mapped[str] = mapped_column(String(500))
    discord_channel_id: Mapped[int | None] = mapped_column(Snowflake)
    discord_message_id: Mapped[int | None] = mapped_column(Snowflake, unique=True)
    #: Flagged by the safety checker: stored, never posted.
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)
    #: A best-of-N candidate the predictor did not pick: stored, never posted, in no dataset.
    passed_over: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The active predictor's score, for images of a best-of-N job (None otherwise).
    predicted: Mapped[float | None] = mapped_column(Float)
    #: Removed by a moderator: out of every dataset.
    removed: Mapped[bool] = mapped_column(Boolean, default=False)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    job: Mapped[Job] = relationship(back_populates="images", lazy="raise")


class ImagePost(Base):
    """A further message showing an image (``/rate``, the rating feed); reactions on it rate the image."""

    __tablename__ = "image_posts"

    message_id: Mapped[int] = mapped_column(Snowflake, primary_key=True, autoincrement=False)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    channel_id: Mapped[int] = mapped_column(Snowflake)
    #: ``rate`` or ``feed``.
    kind: Mapped[str] = mapped_column(String(16))
    posted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PendingPost(Base):
    """A post about to be made: written before the message is sent, removed when the
    message is recorded. After a crash in between, the message is found by the nonce in its
    attachment's name instead of being posted again."""

    __tablename__ = "pending_posts"

    nonce: Mapped[str] = mapped_column(String(32), primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    #: The right-hand image of a comparison post (None for a post of one image).
    other_image_id: Mapped[int | None] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    channel_id: Mapped[int] = mapped_column(Snowflake)
    #: ``own`` (the image's own message), ``rate`` or ``feed``; ``compare`` or
    #: ``feed_compare`` for a comparison.
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Rating(Base):
    """A user's current rating of an image (one per user and image)."""

    __tablename__ = "ratings"
    __table_args__ = (UniqueConstraint("user_id", "image_id", name="uq_ratings_user_image"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    value: Mapped[float] = mapped_column(Float)
    #: Name of the rating scale in force when the rating was made (e.g. ``numbers-10``).
    scale: Mapped[str] = mapped_column(String(64))
    #: ``reaction`` or ``backfill``.
    source: Mapped[str] = mapped_column(String(16))
    #: When the member chose this rating (the gateway's delivery of their reaction); None
    #: when backfill found it, which says when the bot looked, not when they acted.
    rated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class RatingEvent(Base):
    """Append-only log of every raw rating event, written before ``ratings`` changes."""

    __tablename__ = "rating_events"
    __table_args__ = (
        Index("ix_rating_events_message_user", "message_id", "discord_user_id"),
        # The replay that settles a member's rating of an image reads by both.
        Index("ix_rating_events_image_user", "image_id", "discord_user_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[RatingEventKind] = mapped_column(_enum(RatingEventKind, "rating_event_kind"))
    discord_user_id: Mapped[int | None] = mapped_column(Snowflake)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    image_id: Mapped[int | None] = mapped_column(ForeignKey("images.id", ondelete="SET NULL"))
    guild_id: Mapped[int | None] = mapped_column(Snowflake)
    channel_id: Mapped[int | None] = mapped_column(Snowflake)
    message_id: Mapped[int | None] = mapped_column(Snowflake)
    emoji: Mapped[str] = mapped_column(String(100))
    value: Mapped[float | None] = mapped_column(Float)
    scale: Mapped[str | None] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReactionTombstone(Base):
    """A message whose reactions by this member, as Discord shows them, never become ratings:
    they were there when the member erased their data or opted out. Only reactions the bot
    sees them add afterwards count. Names the message, not the emoji."""

    __tablename__ = "reaction_tombstones"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    message_id: Mapped[int] = mapped_column(Snowflake, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ComparisonPost(Base):
    """A message showing two images side by side (``/compare``, the feed): a member's latest
    choice emoji on it says which they prefer."""

    __tablename__ = "comparison_posts"

    message_id: Mapped[int] = mapped_column(Snowflake, primary_key=True, autoincrement=False)
    #: Shown on the left (⬅️) and on the right (➡️).
    image_a_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    image_b_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    channel_id: Mapped[int] = mapped_column(Snowflake)
    guild_id: Mapped[int | None] = mapped_column(Snowflake)
    #: ``compare``, ``feed``, ``arena`` or ``web`` (a pair shown on the web home).
    kind: Mapped[str] = mapped_column(String(16))
    #: The one member a ``web`` pair was shown to: only they may choose on it.
    shown_to: Mapped[int | None] = mapped_column(Snowflake)
    posted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ChoiceEvent(Base):
    """Append-only log of every raw choice event on a comparison post, written before
    ``choices`` changes (the counterpart of :class:`RatingEvent`)."""

    __tablename__ = "choice_events"
    __table_args__ = (
        Index("ix_choice_events_message_user", "message_id", "discord_user_id"),
        # Erase deletes a member's events by their Discord id.
        Index("ix_choice_events_discord_user_id", "discord_user_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[RatingEventKind] = mapped_column(_enum(RatingEventKind, "choice_event_kind"))
    discord_user_id: Mapped[int | None] = mapped_column(Snowflake)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    message_id: Mapped[int] = mapped_column(
        ForeignKey("comparison_posts.message_id", ondelete="CASCADE")
    )
    guild_id: Mapped[int | None] = mapped_column(Snowflake)
    channel_id: Mapped[int | None] = mapped_column(Snowflake)
    emoji: Mapped[str] = mapped_column(String(100))
    #: ``a``, ``b`` or ``tie``.
    winner: Mapped[str] = mapped_column(String(8))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Choice(Base):
    """A member's current choice on one comparison post (one per member and post)."""

    __tablename__ = "choices"
    __table_args__ = (
        UniqueConstraint("user_id", "message_id", name="uq_choices_user_message"),
        CheckConstraint("winner IN ('a', 'b', 'tie')", name="winner_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    message_id: Mapped[int] = mapped_column(
        ForeignKey("comparison_posts.message_id", ondelete="CASCADE"), index=True
    )
    image_a_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    image_b_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    winner: Mapped[str] = mapped_column(String(8))
    #: ``reaction`` or ``backfill``.
    source: Mapped[str] = mapped_column(String(16))
    #: When the member chose (the gateway's delivery); None when backfill found it.
    chosen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Flag(Base):
    """A member's report of an image (the flag emoji), open until a moderator resolves it.

    The safety checker does not file reports: it marks the image itself (``Image.flagged``)."""

    __tablename__ = "flags"

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    #: Who reported it (None once that member's row is gone).
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    reason: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolution: Mapped[str | None] = mapped_column(String(32))


class Embedding(Base):
    """A CLIP embedding of an image: L2-normalised float32 bytes, one per (image, model)."""

    __tablename__ = "embeddings"
    __table_args__ = (UniqueConstraint("image_id", "model", name="uq_embeddings_image_model"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    #: open_clip model name and pretrained tag, e.g. ``ViT-L-14/openai``.
    model: Mapped[str] = mapped_column(String(300))
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Predictor(Base):
    """A trained or imported aesthetic predictor artifact on disk."""

    __tablename__ = "predictors"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    path: Mapped[str] = mapped_column(String(1000))
    embedding_model: Mapped[str] = mapped_column(String(300))
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RegisteredModel(Base):
    """A generation model the bot serves by name: a diffusers folder, or a LoRA on a base."""

    __tablename__ = "registered_models"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: ``path`` (a whole diffusers model) or ``lora`` (an adapter folder on ``base``).
    kind: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(1000))
    base: Mapped[str | None] = mapped_column(String(1000))
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ArenaRound(Base):
    """One prompt and seed rendered by two models and posted as a blind comparison: the
    models' names are shown once the round closes."""

    __tablename__ = "arena_rounds"

    id: Mapped[int] = mapped_column(primary_key=True)
    guild_id: Mapped[int] = mapped_column(Snowflake)
    channel_id: Mapped[int] = mapped_column(Snowflake)
    prompt: Mapped[str] = mapped_column(Text)
    seed: Mapped[int] = mapped_column(Snowflake)
    #: The jobs shown on the left and on the right (sides drawn at random).
    left_job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    right_job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    #: The comparison post, once both images are there.
    message_id: Mapped[int | None] = mapped_column(Snowflake, unique=True)
    #: ``rendering``, ``open``, ``closed`` or ``failed``.
    status: Mapped[str] = mapped_column(String(16), default="rendering", index=True)
    closes_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditEntry(Base):
    """One moderation action (web or Discord): who did what to whom, in which guild."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_guild_id_id", "guild_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    guild_id: Mapped[int] = mapped_column(Snowflake)
    actor_discord_id: Mapped[int] = mapped_column(Snowflake)
    actor_name: Mapped[str] = mapped_column(String(100), default="")
    #: ``remove``, ``dismiss``, ``ban``, ``unban``, ``settings``, ...
    action: Mapped[str] = mapped_column(String(32))
    #: What it acted on, as shown: ``image 12``, ``member 345``.
    target: Mapped[str] = mapped_column(String(200), default="")
    #: Where it was done: ``web`` or ``discord``.
    source: Mapped[str] = mapped_column(String(16), default="web")
    detail: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebSession(Base):
    """One login on the web home. The signed cookie names it; logging out ends it here, so
    every web process sees it ended, also after a restart. An erase or a ban after the
    login ends it too (read from ``users`` and ``guild_bans`` when the cookie comes back)."""

    __tablename__ = "web_sessions"
    __table_args__ = (Index("ix_web_sessions_discord_id", "discord_id"),)

    #: The SHA-256 (hex) of the session id in the cookie; the id itself is never stored.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    discord_id: Mapped[int] = mapped_column(Snowflake)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: The login's end at the latest (``DREAMRATE_WEB_SESSION_HOURS`` after it).
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: Set by logging out (or by an erase on the web): the session is over.
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
