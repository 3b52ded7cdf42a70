"""Settings: the documented names, the TOML file, and one-line errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from dreamrate.core.errors import ConfigError
from dreamrate.core.settings import Settings, known_env_names, load_settings


def test_documented_environment_names_set_their_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DREAMRATE_DATABASE_URL", "postgresql+asyncpg://u:pw@db.example:5432/dr")
    monkeypatch.setenv("DREAMRATE_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("DREAMRATE_GENERATION_MODEL", "/models/tiny-sd")
    monkeypatch.setenv("DREAMRATE_EMBEDDING_MODEL", "ViT-B-32")
    monkeypatch.setenv("DREAMRATE_EMBEDDING_PRETRAINED", "laion2b_s34b_b79k")
    monkeypatch.setenv("DREAMRATE_GENERATION_MAX_IMAGES", "3")
    settings = load_settings()
    assert settings.database_url == "postgresql+asyncpg://u:pw@db.example:5432/dr"
    assert settings.data_dir == tmp_path / "d"
    assert settings.images_dir == tmp_path / "d" / "images"
    assert settings.generation.model == "/models/tiny-sd"
    assert settings.generation.max_images == 3
    assert (settings.embedding.model, settings.embedding.pretrained) == (
        "ViT-B-32",
        "laion2b_s34b_b79k",
    )


def test_defaults_are_the_embedded_real_models(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.database_url == "sqlite+aiosqlite:///data/dreamrate.db"
    assert settings.generation.model == "stabilityai/sd-turbo"
    assert (settings.embedding.model, settings.embedding.pretrained) == ("ViT-L-14", "openai")
    assert settings.rating.value_of("🔟") == 10.0
    assert settings.rating.value_of("1️⃣") == 1.0
    assert settings.rating.value_of("👍") is None


def test_comma_separated_lists_and_discord_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DREAMRATE_DISCORD_GUILDS", "123, 456")
    monkeypatch.setenv("DREAMRATE_GENERATION_BLOCKED_TERMS", "gore,Spam ")
    monkeypatch.setenv("DREAMRATE_RATING_EMOJIS", "👎,👌,👍")
    monkeypatch.setenv("DREAMRATE_RATING_VALUES", "[1, 5.5, 10]")
    monkeypatch.setenv("DISCORD_TOKEN", "token-from-the-usual-place")
    settings = load_settings()
    assert settings.discord.guilds == [123, 456]
    assert settings.generation.blocked_terms == ["gore", "Spam"]
    assert settings.rating.value_of("👌") == 5.5
    token = settings.discord.resolved_token()
    assert token is not None and token.get_secret_value() == "token-from-the-usual-place"
    assert "token-from-the-usual-place" not in repr(settings)


def test_token_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-a-file-token\n")
    monkeypatch.setenv("DREAMRATE_DISCORD_TOKEN_FILE", str(tmp_path / "token"))
    token = load_settings().discord.resolved_token()
    assert token is not None and token.get_secret_value() == "from-a-file-token"
    monkeypatch.setenv("DREAMRATE_DISCORD_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="DREAMRATE_DISCORD_TOKEN_FILE: cannot read"):
        load_settings().discord.resolved_token()


def test_toml_file_is_read_and_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "dreamrate.toml").write_text(
        'data_dir = "state"\n[generation]\nmax_images = 2\nmax_batch = 8\n[rating]\nscale = "stars-5"\n'
        'emojis = ["⭐", "🌟"]\nvalues = [1, 5]\n'
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DREAMRATE_GENERATION_MAX_BATCH", "6")
    settings = load_settings()
    assert settings.data_dir == Path("state")
    assert settings.generation.max_images == 2
    assert settings.generation.max_batch == 6  # environment over file
    assert settings.rating.scale == "stars-5" and settings.rating.value_of("🌟") == 5


@pytest.mark.parametrize(
    ("env", "value", "expected"),
    [
        (
            "DREAMRATE_GENERATION_MAX_IMAGES",
            "0",
            "DREAMRATE_GENERATION_MAX_IMAGES: Input should be greater than or equal to 1",
        ),
        (
            "DREAMRATE_GENERATION_MAX_BATCH",
            "many",
            "DREAMRATE_GENERATION_MAX_BATCH: Input should be a valid integer",
        ),
        (
            "DREAMRATE_GENERATION_MIN_SIZE",
            "100",
            "DREAMRATE_GENERATION_MIN_SIZE: must be a multiple of 8",
        ),
        (
            "DREAMRATE_GENERATION_DEVICE",
            "tpu",
            "DREAMRATE_GENERATION_DEVICE: Input should be 'auto', 'cuda', 'mps' or 'cpu'",
        ),
        (
            "DREAMRATE_DATABASE_URL",
            "mysql://x/y",
            "DREAMRATE_DATABASE_URL: driver 'mysql' is not supported",
        ),
        ("DREAMRATE_DATABASE_URL", "not a url", "DREAMRATE_DATABASE_URL: must be a database URL"),
        (
            "DREAMRATE_LOG_LEVEL",
            "loud",
            "DREAMRATE_LOG_LEVEL: Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'",
        ),
        (
            "DREAMRATE_RATING_VALUES",
            "1,2",
            "DREAMRATE_RATING_EMOJIS and DREAMRATE_RATING_VALUES must have the same length",
        ),
        (
            "DREAMRATE_RATING_CHOICE_EMOJIS",
            "⬅️,5️⃣,🟰",
            "DREAMRATE_RATING_CHOICE_EMOJIS: three distinct emoji (left, right, can't choose)",
        ),
        (
            "DREAMRATE_RATING_CHOICE_EMOJIS",
            "⬅️,⬅",
            "DREAMRATE_RATING_CHOICE_EMOJIS: three distinct emoji (left, right, can't choose)",
        ),
        (
            "DREAMRATE_DISCORD_API_BASE",
            "localhost:8080",
            "DREAMRATE_DISCORD_API_BASE: must start with http://",
        ),
    ],
)
def test_invalid_value_is_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith(expected)
    assert "\n" not in str(info.value)


def test_unknown_key_in_toml_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "dreamrate.toml").write_text("[generation]\nmax_imagez = 2\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="unknown setting DREAMRATE_GENERATION_MAX_IMAGEZ"):
        load_settings()


def test_missing_explicit_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DREAMRATE_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="DREAMRATE_CONFIG: no such file"):
        load_settings()


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValueError):
        settings.generation.max_images = 9  # type: ignore[misc]


def test_every_setting_is_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [name for name in known_env_names() if f"`{name}`" not in readme]
    assert not missing, f"README configuration table lacks {missing}"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgresql+asyncpg://dream:s3cret-pw@db.example:notaport/dreamrate", "must be a"),
        ("mysql://dream:s3cret-pw@db.example/dreamrate", "driver 'mysql' is not supported"),
        ("mysql://dream:s3cret-pw@with@signs@db.example/d", "driver 'mysql' is not supported"),
        ("postgresql+asyncpg://dream:s3cret-pw has spaces@db:x/d", "must be a"),
    ],
)
def test_a_bad_database_url_is_one_line_with_the_password_masked(
    monkeypatch: pytest.MonkeyPatch, url: str, reason: str
) -> None:
    monkeypatch.setenv("DREAMRATE_DATABASE_URL", url)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith(f"DREAMRATE_DATABASE_URL: {reason}")
    assert "s3cret-pw" not in message and "dream:***@" in message
    assert "\n" not in message


def test_a_folder_and_a_bucket_are_two_stores_not_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DREAMRATE_STORAGE_URL", "s3://community-images/x")
    monkeypatch.setenv("DREAMRATE_STORAGE_IMAGES_DIR", "/srv/images")
    with pytest.raises(
        ConfigError, match=r"^DREAMRATE_STORAGE_IMAGES_DIR and DREAMRATE_STORAGE_URL"
    ):
        load_settings()
    # What passes a whole section (the demo: its own folder) replaces the environment's bucket.
    settings = load_settings(storage={"images_dir": "/tmp/demo-images", "url": None})
    assert settings.storage.url is None and str(settings.images_dir) == "/tmp/demo-images"
