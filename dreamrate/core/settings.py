"""Typed settings from ``DREAMRATE_*`` environment variables and an optional ``dreamrate.toml``.

Every setting has one environment name, ``DREAMRATE_<SECTION>_<FIELD>`` (for
example ``DREAMRATE_GENERATION_MAX_IMAGES``), plus the few top-level names that
operators rely on (``DREAMRATE_DATA_DIR``). The TOML file uses the same names
as tables: ``[generation] max_images = 4``. Environment wins over the file,
the file over defaults.
"""

from __future__ import annotations

import logging
import os
import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from dreamrate.core.errors import ConfigError

__all__ = [
    "DEFAULT_RATING_EMOJIS",
    "DatabaseSettings",
    "DiscordSettings",
    "EmbeddingSettings",
    "GenerationSettings",
    "MetricsSettings",
    "RatingSettings",
    "Settings",
    "StorageSettings",
    "env_name",
    "load_settings",
    "parse_s3_url",
]

logger = logging.getLogger(__name__)

ENV_PREFIX = "DREAMRATE_"
#: Environment variables that start with the prefix but are not settings.
NON_SETTING_ENV = {"DREAMRATE_CONFIG"}
#: Prefixes of the test suite's own variables (what CI requires, where the test database is).
NON_SETTING_PREFIXES = ("DREAMRATE_REQUIRE_", "DREAMRATE_TEST_")

#: The SAC / LAION scale: keycap digits 1..10.
DEFAULT_RATING_EMOJIS = ("1️⃣", "2️⃣", "3️⃣", "4️⃣", "5️⃣", "6️⃣", "7️⃣", "8️⃣", "9️⃣", "🔟")


def _split_list(value: Any) -> Any:
    """Accept ``a,b,c`` (environment-friendly) as well as real lists and JSON lists."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


CommaList = Annotated[list[str], NoDecode]
CommaIntList = Annotated[list[int], NoDecode]
CommaFloatList = Annotated[list[float], NoDecode]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Section):
    """Where ratings, jobs and images are recorded."""

    url: str | None = Field(
        default=None,
        description="SQLAlchemy async URL; default SQLite at DATA_DIR/dreamrate.db. "
        "Scale-up: postgresql+asyncpg://user@host/db",
    )
    echo: bool = Field(default=False, description="Log every SQL statement (debugging).")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(value)
            url.port  # noqa: B018 - a malformed port raises here, not at connect time
        except (ArgumentError, ValueError):
            raise ValueError(
                "must be a database URL such as sqlite+aiosqlite:///data/dreamrate.db "
                "or postgresql+asyncpg://user@host:5432/db"
            ) from None
        if url.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
            raise ValueError(
                f"driver {url.drivername!r} is not supported; use sqlite+aiosqlite:// "
                "or postgresql+asyncpg://"
            )
        return value


#: S3's bucket names: 3-63 lowercase letters, digits, dots and hyphens.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def parse_s3_url(url: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of ``s3://bucket/prefix`` (the prefix without its slashes).

    Raises
    ------
    ValueError
        when ``url`` is not of that form or the bucket name is not a valid S3 name.
    """
    parts = urlsplit(url.strip())
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError("must be s3://bucket or s3://bucket/prefix")
    if not _BUCKET.match(parts.netloc) or ".." in parts.netloc:
        raise ValueError(
            "the bucket must be 3-63 lowercase letters, digits, dots and hyphens "
            "(credentials go in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, not the URL)"
        )
    prefix = parts.path.strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise ValueError("the prefix must not hold empty, '.' or '..' parts")
    return parts.netloc, prefix


class StorageSettings(_Section):
    """Where images go (one store every host reaches), and folders under the data directory."""

    url: str | None = Field(
        default=None,
        description="Image store every host reaches: s3://bucket/prefix (endpoint, region, "
        "credentials: AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY); "
        "default: the local folder IMAGES_DIR.",
    )
    images_dir: Path | None = Field(
        default=None, description="Generated images; default DATA_DIR/images."
    )
    predictors_dir: Path | None = Field(
        default=None, description="Trained predictors; default DATA_DIR/predictors."
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parse_s3_url(value)
        return value.strip()

    @model_validator(mode="after")
    def _one_store(self) -> StorageSettings:
        if self.url is not None and self.images_dir is not None:
            raise ValueError(
                "DREAMRATE_STORAGE_IMAGES_DIR and DREAMRATE_STORAGE_URL name two image stores; "
                "set one (with s3:// the images are in the bucket, not in a folder)"
            )
        return self


class DiscordSettings(_Section):
    """How the bot reaches Discord (or a Discord-compatible server)."""

    token: SecretStr | None = Field(
        default=None, description="Bot token (also read from DISCORD_TOKEN). Never logged."
    )
    token_file: Path | None = Field(default=None, description="File holding the bot token.")
    api_base: str | None = Field(
        default=None,
        description="REST base URL of a Discord-compatible server, e.g. http://127.0.0.1:8080/api/v10",
    )
    gateway_url: str | None = Field(
        default=None, description="Gateway websocket URL of a Discord-compatible server."
    )
    guilds: CommaIntList = Field(
        default_factory=list,
        description="Guild ids to sync commands to instantly; empty: global sync.",
    )
    backfill_days: int = Field(
        default=14, ge=0, le=365, description="How far back backfill re-reads reactions."
    )
    feed_interval: int = Field(
        default=60, ge=1, le=10_080, description="Minutes between rating-feed posts."
    )
    moderator_role: str | None = Field(default=None, description="Role name that may use /admin.")
    rate_cooldown: float = Field(
        default=60.0, ge=0, le=86_400, description="Seconds a member waits between two /rate."
    )
    arena_hours: float = Field(
        default=24.0, gt=0, le=720, description="Hours an /arena round stays open, names hidden."
    )

    _split = field_validator("guilds", mode="before")(_split_list)

    @field_validator("api_base", "gateway_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(("http://", "https://", "ws://", "wss://")):
            raise ValueError("must start with http://, https://, ws:// or wss://")
        return value.rstrip("/")

    def resolved_token(self) -> SecretStr | None:
        """The token from ``token`` or, failing that, the contents of ``token_file``."""
        if self.token is not None:
            return self.token
        if self.token_file is not None:
            try:
                text = self.token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"DREAMRATE_DISCORD_TOKEN_FILE: cannot read {self.token_file} ({exc.strerror})"
                ) from None
            return SecretStr(text) if text else None
        return None


class GenerationSettings(_Section):
    """What members may ask of the shared GPU worker."""

    model: str = Field(
        default="stabilityai/sd-turbo",
        description="diffusers model id or local path used by default.",
    )
    allowed_models: CommaList = Field(
        default_factory=list,
        description="Other models members may pick; the default is always allowed.",
    )
    device: Literal["auto", "cuda", "mps", "cpu"] = Field(
        default="auto", description="Where the pipeline runs."
    )
    max_prompt_chars: int = Field(
        default=1000, ge=1, le=100_000, description="Longest accepted prompt."
    )
    max_images: int = Field(default=4, ge=1, le=16, description="Most images per job.")
    max_best_of: int = Field(
        default=4,
        ge=1,
        le=16,
        description="Most candidates per image a /dream may ask for (the predictor keeps the best).",
    )
    max_batch: int = Field(default=4, ge=1, le=64, description="Most images in one pipeline call.")
    min_size: int = Field(
        default=32, ge=8, description="Smallest width/height in pixels (multiple of 8)."
    )
    max_size: int = Field(
        default=1024, ge=8, description="Largest width/height in pixels (multiple of 8)."
    )
    max_steps: int = Field(default=50, ge=1, le=1000, description="Most denoising steps per job.")
    default_steps: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Steps when a member gives none; default: the model's own (sd-turbo: set 1).",
    )
    default_guidance: float | None = Field(
        default=None,
        ge=0,
        description="Guidance when a member gives none; default: the model's own (sd-turbo: set 0).",
    )
    max_guidance: float = Field(
        default=20.0, ge=0, description="Largest classifier-free guidance scale."
    )
    per_user_queue_cap: int = Field(default=2, ge=1, description="Queued jobs one member may have.")
    global_queue_cap: int = Field(default=200, ge=1, description="Queued jobs in total.")
    max_attempts: int = Field(
        default=3, ge=1, le=100, description="Claims before a job fails for good."
    )
    lease_seconds: float = Field(
        default=120.0, gt=0, description="A worker's lease on a claimed job."
    )
    poll_interval: float = Field(
        default=0.5, gt=0, le=60, description="Seconds an idle worker waits between queue checks."
    )
    blocked_terms: CommaList = Field(
        default_factory=list, description="Words refused in prompts (whole word, case-insensitive)."
    )
    safety_checker: str | None = Field(
        default=None, description="diffusers safety checker model id or path; off when empty."
    )

    _split = field_validator("allowed_models", "blocked_terms", mode="before")(_split_list)

    @model_validator(mode="after")
    def _check_sizes(self) -> GenerationSettings:
        for name in ("min_size", "max_size"):
            if getattr(self, name) % 8:
                raise ValueError(
                    f"DREAMRATE_GENERATION_{name.upper()}: must be a multiple of 8, got {getattr(self, name)}"
                )
        if self.default_steps is not None and self.default_steps > self.max_steps:
            raise ValueError(
                f"DREAMRATE_GENERATION_DEFAULT_STEPS ({self.default_steps}) must not exceed "
                f"DREAMRATE_GENERATION_MAX_STEPS ({self.max_steps})"
            )
        if self.min_size > self.max_size:
            raise ValueError(
                f"DREAMRATE_GENERATION_MIN_SIZE ({self.min_size}) must not exceed "
                f"DREAMRATE_GENERATION_MAX_SIZE ({self.max_size})"
            )
        return self


class EmbeddingSettings(_Section):
    """The CLIP model whose image embeddings the predictor reads."""

    model: str = Field(
        default="ViT-L-14",
        description="open_clip model name, local-dir:PATH, or a folder with open_clip_config.json.",
    )
    pretrained: str = Field(
        default="openai",
        description="open_clip pretrained tag or checkpoint file (ignored for folders).",
    )
    batch_size: int = Field(default=32, ge=1, le=4096, description="Images per embedding batch.")
    device: Literal["auto", "cuda", "mps", "cpu"] = Field(
        default="auto", description="Where CLIP runs."
    )


class RatingSettings(_Section):
    """The emoji members rate with and the values they mean."""

    scale: str = Field(
        default="numbers-10", description="Name of the scale, stored with each rating."
    )
    emojis: CommaList = Field(
        default_factory=lambda: list(DEFAULT_RATING_EMOJIS),
        description="Rating emoji, lowest first.",
    )
    values: CommaFloatList = Field(
        default_factory=lambda: [float(v) for v in range(1, 11)],
        description="Value of each emoji (same order); default 1..10.",
    )
    flag_emoji: str = Field(default="🚩", description="Emoji that flags an image for moderators.")
    choice_emojis: CommaList = Field(
        default_factory=lambda: ["⬅️", "➡️", "🟰"],
        description="On comparison posts: left image, right image, can't choose.",
    )
    seed_reactions: bool = Field(
        default=True,
        description="Add the rating emoji under each posted image (off: members add them; "
        "Discord allows one bot reaction per 0.25 s per channel).",
    )
    min_ratings_per_image: int = Field(
        default=1, ge=1, description="Ratings an image needs to train on."
    )

    _split = field_validator("emojis", "values", "choice_emojis", mode="before")(_split_list)

    @model_validator(mode="after")
    def _check_scale(self) -> RatingSettings:
        bare = [e.replace("\ufe0f", "") for e in self.choice_emojis]
        if len(set(bare)) != 3 or set(bare) & {
            e.replace("\ufe0f", "") for e in (*self.emojis, self.flag_emoji)
        }:
            raise ValueError(
                "DREAMRATE_RATING_CHOICE_EMOJIS: three distinct emoji (left, right, can't "
                "choose), none of them a rating emoji or the flag"
            )
        if not self.emojis:
            raise ValueError("DREAMRATE_RATING_EMOJIS: at least one rating emoji is needed")
        if len(self.emojis) != len(self.values):
            raise ValueError(
                "DREAMRATE_RATING_EMOJIS and DREAMRATE_RATING_VALUES must have the same length, "
                f"got {len(self.emojis)} and {len(self.values)}"
            )
        if len(set(self.emojis)) != len(self.emojis) or self.flag_emoji in self.emojis:
            raise ValueError(
                "DREAMRATE_RATING_EMOJIS: must be distinct and must not include the flag emoji"
            )
        # Discord allows 20 distinct reactions per message; the flag takes one.
        if len(self.emojis) > 19:
            raise ValueError(
                "DREAMRATE_RATING_EMOJIS: at most 19 (Discord allows 20 reactions with the flag), "
                f"got {len(self.emojis)}"
            )
        return self

    def value_of(self, emoji: str) -> float | None:
        """The rating an emoji stands for, or None for any other emoji."""
        try:
            return self.values[self.emojis.index(emoji)]
        except ValueError:
            return None


class WebSettings(_Section):
    """The web home (``dreamrate web``): where it listens and how members log in."""

    host: str = Field(default="127.0.0.1", description="Address the web server listens on.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port the web server listens on.")
    base_url: str | None = Field(
        default=None,
        description="Public URL members open (https://... behind a TLS proxy): the OAuth2 "
        "redirect is BASE_URL/callback, and https makes cookies Secure. Default: http://HOST:PORT",
    )
    client_id: int | None = Field(
        default=None,
        description="OAuth2 client id of the Discord application; default: read with the bot token.",
    )
    client_secret: SecretStr | None = Field(
        default=None, description="OAuth2 client secret of the Discord application. Never logged."
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Key that signs session cookies; default: a random key kept in "
        "DATA_DIR/web-secret-key.",
    )
    session_hours: float = Field(
        default=12.0, gt=0, le=24 * 90, description="Hours a login lasts (then log in again)."
    )
    maintainers: CommaIntList = Field(
        default_factory=list, description="Discord ids of the maintainers (the maintainer pages)."
    )
    thumbnail_size: int = Field(
        default=384, ge=64, le=2048, description="Longest side of gallery thumbnails, in pixels."
    )
    outputs: CommaList = Field(
        default_factory=list,
        description="Folders whose score runs, manifests and dataset exports the maintainers' "
        "page lists (3 levels deep); default: DATA_DIR.",
    )

    _split = field_validator("maintainers", "outputs", mode="before")(_split_list)

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class MetricsSettings(_Section):
    """Where each long-running process serves /metrics (Prometheus) and /healthz."""

    host: str = Field(
        default="127.0.0.1",
        description="Address the metrics and health endpoints listen on (0.0.0.0: every "
        "interface, for a Prometheus on another host).",
    )
    bot_port: int | None = Field(
        default=None, ge=0, le=65535, description="The bot's metrics port; default: off."
    )
    worker_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="A worker's metrics port (also the bot's own worker); default: off. "
        "Several workers on one host: `dreamrate worker --metrics-port` each.",
    )
    web_port: int | None = Field(
        default=None, ge=0, le=65535, description="The web home's metrics port; default: off."
    )


class Settings(BaseSettings):
    """All of dreamrate's settings, read once at start-up."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="forbid",
        frozen=True,
    )

    data_dir: Path = Field(
        default=Path("data"), description="Database, images, embeddings, predictors."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log verbosity."
    )
    log_format: Literal["rich", "json"] = Field(
        default="rich",
        description="rich: readable lines on a terminal; json: one JSON object a line "
        "(for a log collector), secrets scrubbed the same way.",
    )
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    discord: DiscordSettings = Field(default_factory=DiscordSettings)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    rating: RatingSettings = Field(default_factory=RatingSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    # -- derived values -------------------------------------------------------------

    @cached_property
    def database_url(self) -> str:
        """The configured database URL, or SQLite in the data directory."""
        if self.database.url:
            return self.database.url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'dreamrate.db').as_posix()}"

    def secrets(self) -> list[str]:
        """Every secret the settings hold (the logs scrub them): the bot token, the OAuth2
        secret, the session key and the database password."""
        from sqlalchemy.engine import make_url

        found = [self.discord.resolved_token(), self.web.client_secret, self.web.secret_key]
        values = [s.get_secret_value() for s in found if s is not None]
        if self.database.url:
            values.append(make_url(self.database.url).password or "")
        return [v for v in values if v]

    @property
    def images_dir(self) -> Path:
        return self.storage.images_dir or self.data_dir / "images"

    @property
    def predictors_dir(self) -> Path:
        return self.storage.predictors_dir or self.data_dir / "predictors"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            env_settings,
            _DiscordTokenSource(settings_cls),
        ]
        config_file = _config_file()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)


class _DiscordTokenSource(PydanticBaseSettingsSource):
    """``DISCORD_TOKEN``, the name every Discord bot host already sets."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        token = os.environ.get("DISCORD_TOKEN")
        return {"discord": {"token": token}} if token else {}


def _config_file() -> Path | None:
    explicit = os.environ.get("DREAMRATE_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"DREAMRATE_CONFIG: no such file {path}")
        return path
    default = Path("dreamrate.toml")
    return default if default.is_file() else None


def env_name(loc: tuple[str | int, ...]) -> str:
    """The environment variable that sets the setting at ``loc`` (a pydantic error location)."""
    parts = [str(p) for p in loc if not isinstance(p, int)]
    return ENV_PREFIX + "_".join(parts[:2]).upper()


def _describe(error: dict[str, Any]) -> str:
    loc = tuple(error.get("loc", ()))
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if error.get("type") == "extra_forbidden":
        return f"unknown setting {env_name(loc)} ({'.'.join(map(str, loc))})"
    if len(loc) == 1 and loc[0] in _SECTIONS:
        return message  # a cross-field check; its message names the settings itself
    given = error.get("input")
    shown = "" if isinstance(given, dict) or given is None else f" (got {str(given)[:60]!r})"
    name = env_name(loc) if loc else "settings"
    if "token" in name.lower():
        shown = ""  # never echo a secret back
    elif name.endswith("_URL") and isinstance(given, str):
        shown = f" (got {_without_password(given)[:60]!r})"
    return f"{name}: {message}{shown}"


def _without_password(url: str) -> str:
    """``url`` with the password of ``scheme://user:password@host`` replaced by ``***``
    (up to the last ``@``: a password may contain ``@``, spaces, anything)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not parseable at all: mask by hand
        return re.sub(r"(://[^:/@]*:).*@", r"\1***@", url)


def load_settings(**overrides: Any) -> Settings:
    """Read the settings once; an invalid value raises :class:`ConfigError` with one line.

    Raises
    ------
    ConfigError
        naming the setting (its environment variable) and what is allowed.
    """
    unknown = sorted(
        name
        for name in os.environ
        if name.startswith(ENV_PREFIX)
        and name not in NON_SETTING_ENV
        and not name.startswith(NON_SETTING_PREFIXES)
        and not _is_known_env(name)
    )
    for name in unknown:
        logger.warning("ignoring unknown environment variable %s (not a dreamrate setting)", name)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc.errors()[0])) from None
    except (ValueError, OSError) as exc:  # e.g. malformed TOML
        raise ConfigError(f"settings: {exc}") from None


def known_env_names() -> list[str]:
    """Every environment variable that sets a setting, in declaration order."""
    names: list[str] = []
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += [f"{ENV_PREFIX}{name}_{sub}".upper() for sub in annotation.model_fields]
        else:
            names.append(f"{ENV_PREFIX}{name}".upper())
    return names


def _is_known_env(name: str) -> bool:
    return name in _KNOWN


_KNOWN = set(known_env_names())
_SECTIONS = {"database", "storage", "discord", "generation", "embedding", "rating", "metrics"}
