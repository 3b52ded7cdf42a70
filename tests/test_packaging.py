"""The installed distribution: one top-level package, the stages inside it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_wheel_installs_only_the_dreamrate_namespace(tmp_path: Path) -> None:
    build = ["wheel", "--no-deps", "--no-build-isolation", "-q", "--wheel-dir", str(tmp_path)]
    subprocess.run(
        [sys.executable, "-m", "pip", *build, str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("dreamrate-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        top_level = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
        assert archive.read(top_level).decode().split() == ["dreamrate"]
    roots = {name.split("/", 1)[0] for name in names}
    assert {r for r in roots if not r.endswith(".dist-info")} == {"dreamrate"}
    for stage in ("db", "generation", "ratings", "aesthetic", "bot"):
        assert f"dreamrate/{stage}/__init__.py" in names
    # Alembic needs its environment, template and every revision at run time.
    assert "dreamrate/db/migrations/env.py" in names
    assert "dreamrate/db/migrations/script.py.mako" in names
    assert any(n.startswith("dreamrate/db/migrations/versions/0001_") for n in names)


def test_outside_the_checkout_only_the_namespace_imports(tmp_path: Path) -> None:
    code = (
        "import importlib.util, dreamrate.db.models, dreamrate.bot\n"
        "print(all(importlib.util.find_spec(n) is None for n in "
        "('db', 'bot', 'generation', 'ratings', 'aesthetic')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "True"
