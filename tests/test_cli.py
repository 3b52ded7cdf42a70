"""The CLI as users run it: one clear line and exit code 2 for every user error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TOKEN = "MTIzNDU2Nzg5.test-token-that-must-never-print"
#: The installed console script, exactly what users run.
DREAMRATE = Path(sys.executable).parent / "dreamrate"


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    full_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DREAMRATE_") or k.startswith("DREAMRATE_TEST_")
    }
    full_env.pop("DISCORD_TOKEN", None)
    full_env.update(env or {})
    return subprocess.run(
        [str(DREAMRATE), *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
    )


def _one_error_line(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0]
    assert "Traceback" not in result.stderr


def test_db_upgrade_then_status_on_sqlite(tmp_path: Path) -> None:
    env = {"DREAMRATE_DATA_DIR": str(tmp_path / "data")}
    result = run_cli("db", "upgrade", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "at migration" in result.stdout and "(newest)" in result.stdout
    assert (tmp_path / "data" / "dreamrate.db").is_file()
    status = run_cli("db", "status", env=env, cwd=tmp_path)
    assert status.returncode == 0 and "(newest)" in status.stdout


def test_db_status_of_an_empty_database_says_to_upgrade(tmp_path: Path) -> None:
    result = run_cli("db", "status", env={"DREAMRATE_DATA_DIR": str(tmp_path)}, cwd=tmp_path)
    assert result.returncode == 1
    assert "run `dreamrate db upgrade`" in result.stdout


@pytest.mark.postgres
def test_db_upgrade_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    result = run_cli(
        "db",
        "upgrade",
        env={"DREAMRATE_DATABASE_URL": postgres_url, "DREAMRATE_DATA_DIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert "postgresql+asyncpg://" in result.stdout and "(newest)" in result.stdout


def test_unreachable_database(tmp_path: Path) -> None:
    env = {
        "DREAMRATE_DATABASE_URL": "postgresql+asyncpg://postgres:hunter2pass@127.0.0.1:1/nowhere",
        "DREAMRATE_DATA_DIR": str(tmp_path),
    }
    result = run_cli("db", "upgrade", env=env)
    _one_error_line(
        result,
        "DREAMRATE_DATABASE_URL: cannot reach postgresql+asyncpg://postgres:***@127.0.0.1:1/nowhere",
    )
    assert "hunter2pass" not in result.stderr


def test_unwritable_data_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run_cli("db", "upgrade", env={"DREAMRATE_DATA_DIR": str(blocker / "data")})
    _one_error_line(result, "DREAMRATE_DATA_DIR:", "is not a writable folder")


def test_database_newer_than_code(tmp_path: Path) -> None:
    import sqlite3

    env = {"DREAMRATE_DATA_DIR": str(tmp_path)}
    assert run_cli("db", "upgrade", env=env).returncode == 0
    with sqlite3.connect(tmp_path / "dreamrate.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999_future'")
    _one_error_line(run_cli("db", "upgrade", env=env), "newer than this dreamrate knows")


def test_invalid_setting(tmp_path: Path) -> None:
    result = run_cli("config", "show", env={"DREAMRATE_GENERATION_MAX_IMAGES": "lots"})
    _one_error_line(result, "DREAMRATE_GENERATION_MAX_IMAGES", "valid integer", "'lots'")


def test_usage_error_exits_2() -> None:
    assert run_cli("db", "no-such-command").returncode == 2


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    env = {
        "DISCORD_TOKEN": TOKEN,
        "DREAMRATE_DATABASE_URL": "postgresql+asyncpg://u:topsecretpw@h/db",
        "DREAMRATE_GENERATION_MAX_IMAGES": "3",
    }
    for args in (("config", "show"), ("config", "show", "--json")):
        result = run_cli(*args, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        out = result.stdout + result.stderr
        assert TOKEN not in out and "topsecretpw" not in out
        assert "DREAMRATE_DISCORD_TOKEN" in out and "********" in out
        assert "DREAMRATE_GENERATION_MAX_IMAGES" in out


def test_json_config_is_complete(tmp_path: Path) -> None:
    import json

    from dreamrate.core.settings import known_env_names

    result = run_cli(
        "config", "show", "--json", env={"DREAMRATE_DATA_DIR": "/srv/dr"}, cwd=tmp_path
    )
    shown = json.loads(result.stdout)
    assert set(known_env_names()) <= set(shown)
    assert shown["DREAMRATE_DATA_DIR"] == "/srv/dr"
    assert shown["DREAMRATE_STORAGE_IMAGES_DIR"] == "/srv/dr/images"
    assert shown["DREAMRATE_DATABASE_URL"] == "sqlite+aiosqlite:////srv/dr/dreamrate.db"


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from dreamrate.cli import main\n"
        "code = main(['--help'])\n"
        "print('exit', code, 'torch' in sys.modules, 'discord' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "Usage: dreamrate" in out.stdout  # --help really ran
    assert out.stdout.strip().splitlines()[-1] == "exit 0 False False"


def test_ratings_export_cli(tmp_path: Path) -> None:
    env = {"DREAMRATE_DATA_DIR": str(tmp_path)}
    result = run_cli("ratings", "export", "--out", str(tmp_path / "r.jsonl"), env=env)
    assert result.returncode == 0, result.stderr
    assert "wrote 0 ratings of every guild" in result.stdout
    assert (tmp_path / "r.jsonl").read_text() == ""
    scoped = run_cli(
        "ratings",
        "export",
        "--guild",
        "5",
        "--guild",
        "6",
        "--out",
        str(tmp_path / "g.jsonl"),
        env=env,
    )
    assert "wrote 0 ratings of guild(s) 5, 6" in scoped.stdout, scoped.stderr
    _one_error_line(
        run_cli("ratings", "export", "--out", str(tmp_path / "r.csv"), env=env),
        "must end in .parquet or .jsonl",
    )
