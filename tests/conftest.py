"""Shared fixtures: a fresh database on SQLite and on PostgreSQL, and tiny offline models."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from sqlalchemy.engine import make_url

# huggingface_hub reads this once, at import: tests stand for a machine without internet.
os.environ["HF_HUB_OFFLINE"] = "1"

# Test processes side by side share the cores: each torch (and every process it starts: bot
# workers, CLI runs, inherit it) gets its share of threads, at least one. Two processes of two
# threads each on two cores spin against each other: the toy model's training took 402 s in
# the suite so, 224 s with one thread each (159 s alone on an idle machine with two).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_name, str(_share))

DEFAULT_TEST_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
#: The S3 image store's secret key in tests/storage (AWS_SECRET_ACCESS_KEY).
S3_SECRET_KEY = "dreamrate-s3-secret-key-never-printed"
#: Bot tokens and keys the suite uses; none may ever appear in anything a test captured.
SECRET_TOKENS = (
    "MTEwMDAwMDAwMDAwMDAwMDAwMw.fake.bot-token-never-printed",  # tests/bot/conftest.py
    "demo.local.token",  # dreamrate demo
    S3_SECRET_KEY,
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Fail any test whose captured stdout, stderr or log (at INFO, as users run) shows a token."""
    outcome = yield
    report = outcome.get_result()
    for title, text in report.sections:
        if not title.endswith(report.when):  # later phases repeat earlier phases' sections
            continue
        for token in SECRET_TOKENS:
            if token in text:
                report.outcome = "failed"
                report.longrepr = f"a Discord bot token appeared in {title!r}"


REFERENCE_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference"

#: CI sets it (.ci/run): nothing the suite claims to test may skip there. A missing optional
#: part fails the tests that need it, and any other skip fails too. One part alone:
#: ``DREAMRATE_REQUIRE_<PART>=1`` (``POSTGRES``, ``RAY``, ``REFERENCE``, ...).
REQUIRE_ALL = "DREAMRATE_REQUIRE_ALL"


def _installed(module: str) -> Callable[[], bool]:
    return lambda: importlib.util.find_spec(module) is not None


def _hardware_half() -> bool:
    from dreamrate.aesthetic.filtering.kernel import HARDWARE_HALF

    return HARDWARE_HALF


#: What ``@pytest.mark.needs(part, ...)`` may name: how to tell the part is here, and the
#: skip reason when it is not. Only the reference data may be missing on a contributor's
#: machine (it lives outside the repository); ``make install`` brings the rest.
PARTS: dict[str, tuple[Callable[[], bool], str]] = {
    "ray": (_installed("ray"), "Ray is not installed (`make install` adds the dev extras)"),
    "embedding-reader": (
        _installed("embedding_reader"),
        "embedding-reader is not installed (`make install` adds the dev extras)",
    ),
    "reference": (
        REFERENCE_DIR.is_dir,
        f"needs the reference data in ../shared/reference ({REFERENCE_DIR} is missing)",
    ),
    "f16c": (_hardware_half, "this CPU has no float16 conversion (F16C)"),
}


def required_by(part: str) -> str | None:
    """The variable that forbids skipping for want of ``part``, if one is set to 1."""
    for name in (f"DREAMRATE_REQUIRE_{part.upper().replace('-', '_')}", REQUIRE_ALL):
        if os.environ.get(name) == "1":
            return name
    return None


def skip_unless_required(part: str, reason: str) -> NoReturn:
    """Skip for want of ``part`` with ``reason``; fail instead where a variable requires it."""
    name = required_by(part)
    if name is not None:
        pytest.fail(f"{reason} ({name}=1 forbids skipping)", pytrace=False)
    pytest.skip(reason)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "needs(*parts): skip without these parts of tests/conftest.py's PARTS"
    )
    if os.environ.get(REQUIRE_ALL) == "1":
        config.pluginmanager.register(_NoSkips(), "dreamrate-no-skips")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests of the toy model first, in their order, then the rest in theirs.

    `make test` runs ``--dist worksteal``: each test process starts with one contiguous share
    of this list and takes work from the others when it runs out. So the first process trains
    the toy model (minutes, shared through a file lock) and then runs every test that needs
    it, while the others run other tests instead of waiting on that lock.
    """
    toy = [item for item in items if "toy_model" in getattr(item, "fixturenames", ())]
    if toy:
        rest = [item for item in items if "toy_model" not in getattr(item, "fixturenames", ())]
        items[:] = toy + rest


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("needs"):
        for part in mark.args:
            present, reason = PARTS[part]
            if not present():
                skip_unless_required(part, reason)


class _NoSkips:
    """Under DREAMRATE_REQUIRE_ALL=1, a skip from anywhere (a test, a fixture, a module's
    ``importorskip``) is reported as a failure naming the skip's reason."""

    @staticmethod
    def _forbid(report: pytest.TestReport | pytest.CollectReport) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            longrepr = report.longrepr
            reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
            report.outcome = "failed"
            report.longrepr = f"{REQUIRE_ALL}=1 forbids skipping; the skip's reason: {reason}"

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
        outcome = yield
        self._forbid(outcome.get_result())

    @pytest.hookimpl(hookwrapper=True)
    def pytest_make_collect_report(self, collector: pytest.Collector):  # type: ignore[no-untyped-def]
        outcome = yield
        self._forbid(outcome.get_result())


@pytest.fixture(scope="session")
def _discord_traffic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("discord-traffic")


@pytest.fixture(autouse=True)
def _discord_spec_conformance(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, _discord_traffic_root: Path
) -> Iterator[None]:
    """Every REST answer the local Discord sends during a test (in this process or a child)
    must match Discord's published OpenAPI description for its operation and status; the
    test fails naming the route and the field (tests/discord_spec.py)."""
    from dreamrate.fake_discord.traffic import TRAFFIC_ENV

    folder = _discord_traffic_root / hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:16]
    monkeypatch.setenv(TRAFFIC_ENV, str(folder))
    yield
    if not folder.exists():
        return
    from tests.discord_spec import checker, read_traffic

    try:
        found = checker().check_all(read_traffic(folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if found:
        lines = "\n".join(f"  {d} ({n} answer(s))" for d, n in sorted(found.items(), key=str))
        pytest.fail(
            f"the local Discord answered outside Discord's published spec:\n{lines}",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's own dreamrate settings or a hub connection."""
    for name in list(os.environ):
        if (
            name.startswith("DREAMRATE_")
            and not name.startswith(("DREAMRATE_TEST_", "DREAMRATE_REQUIRE_"))
        ) or name == "DISCORD_TOKEN":
            monkeypatch.delenv(name)


def _postgres_admin_url() -> str:
    return os.environ.get("DREAMRATE_TEST_POSTGRES_URL", DEFAULT_TEST_POSTGRES_URL)


async def _pg_execute(sql: str) -> list[object]:
    """Run ``sql`` on the admin database; return its rows."""
    import asyncpg

    url = make_url(_postgres_admin_url())
    conn = await asyncpg.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username or "postgres",
        password=url.password,
        database=url.database or "postgres",
        timeout=5,
    )
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_available() -> bool:
    """Whether the test PostgreSQL answers; in CI (DREAMRATE_REQUIRE_ALL=1) it must."""
    try:
        asyncio.run(_pg_execute("SELECT 1"))
    except Exception as exc:
        message = (
            f"PostgreSQL at {make_url(_postgres_admin_url()).render_as_string(hide_password=True)} "
            f"is unreachable ({exc}); start it or set DREAMRATE_TEST_POSTGRES_URL to run these tests"
        )
        skip_unless_required("postgres", message)
    return True


@pytest.fixture
def postgres_url(postgres_available: bool) -> Iterator[str]:
    """A brand-new PostgreSQL database for one test, dropped afterwards."""
    name = f"dreamrate_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_execute(f'CREATE DATABASE "{name}"'))
    url = make_url(_postgres_admin_url()).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        asyncio.run(_pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'dreamrate.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """The same test on both backends: SQLite (embedded) and PostgreSQL (scale-up)."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[object]:
    """An engine on a fresh database migrated to the newest schema."""
    from dreamrate.db.engine import create_engine
    from dreamrate.db.migrate import upgrade

    eng = create_engine(database_url)
    await upgrade(eng)
    try:
        yield eng
    finally:
        await eng.dispose()


def _run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder the test processes of this run share (read-only things made once)."""
    base = tmp_path_factory.getbasetemp()
    # Under xdist each worker's base is a folder of the run's own; alone, the base is the run's.
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(tiny-sd, tiny-clip)`` written once per test run by ``make-tiny``'s own code: the
    first test process writes them under a file lock, the others read the same copy."""
    from filelock import FileLock

    from dreamrate.tiny_models import make_tiny_models

    shared = _run_folder(tmp_path_factory)
    target = shared / "tiny-models"
    with FileLock(str(shared / "tiny-models.lock")):
        # Each folder appears whole or not at all, tiny-clip last.
        if not (target / "tiny-clip").is_dir():
            make_tiny_models(target)
    return target / "tiny-sd", target / "tiny-clip"


@pytest.fixture(scope="session")
def toy_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy world's model (``make-toy``'s code, the ``small`` preset), trained once per
    test run: the test processes share one copy, the first one trains it under a file lock."""
    from filelock import FileLock

    from dreamrate.tiny_models import make_toy_model

    shared = _run_folder(tmp_path_factory)
    target = shared / "toy-model"
    with FileLock(str(shared / "toy-model.lock")):
        if not (target / "model_index.json").is_file():
            make_toy_model(target, seed=0, preset="small", show_progress=False)
    return target


@pytest.fixture
def cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Callable[..., object]]:
    """``cli("score", "--workers", "abc")``: run dreamrate in this process, in a fresh folder;
    returns a :class:`tests.cli_helpers.Run`."""
    import logging

    from dreamrate.cli import main
    from tests.cli_helpers import Run, tree

    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("DREAMRATE_")]:
        monkeypatch.delenv(name)  # the tests' own variables would be warned about as unknown
    monkeypatch.setenv("DREAMRATE_DATA_DIR", str(tmp_path / "data"))
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level

    def run(*args: str | Path) -> Run:
        before = tree(tmp_path)
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return Run(code, out, err, before ^ tree(tmp_path))

    yield run
    # main() sets up logging for the process, as the real script does; undo it.
    root.handlers[:] = handlers
    root.setLevel(level)
