"""The S3 image store against moto's S3-compatible server on 127.0.0.1: content addressing,
one-line refusals at start (exit code 2) that never show a credential, and a worker whose
store refuses writes mid-batch giving its jobs back."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from dreamrate.core.errors import ConfigError, StorageError
from dreamrate.core.settings import load_settings
from dreamrate.generation.s3_store import S3Store
from dreamrate.generation.store import ImageUnreadable, encode_png, open_image_store
from tests.cli_helpers import refused
from tests.conftest import S3_SECRET_KEY
from tests.storage.conftest import S3


def test_images_are_stored_once_under_their_hash_below_the_prefix(s3: S3) -> None:
    store = open_image_store(load_settings(storage={"url": s3.url("com/munity")}))
    assert isinstance(store, S3Store)
    store.check(write=True)
    image = Image.new("RGB", (16, 16), (10, 200, 30))
    digest, relative = store.save(image)
    assert store.save(image.copy()) == (digest, relative)  # same pixels, same object
    assert relative == f"{digest[:2]}/{digest}.png"
    key = f"com/munity/{relative}"
    assert s3.object_keys() == [key]  # the write check left nothing behind either
    assert hashlib.sha256(s3.object(key)).hexdigest() == digest
    assert store.read(relative) == encode_png(image)
    assert store.location(relative) == f"s3://{s3.bucket}/{key}"
    assert s3.admin.head_object(Bucket=s3.bucket, Key=key)["ContentType"] == "image/png"


def test_a_missing_image_is_unreadable_while_the_store_works(s3: S3) -> None:
    store = S3Store.from_url(s3.url())
    with pytest.raises(ImageUnreadable, match="no such image"):
        store.read(f"ab/{'0' * 64}.png")
    for path in ("../outside.png", "/etc/passwd", "ab/../../x.png"):
        with pytest.raises(ImageUnreadable, match="not a path in the image store"):
            store.read(path)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("command", [["worker"], ["export", "dataset", "--out", "ds"], ["embed"]])
def test_a_store_that_cannot_be_used_stops_each_command_at_start_in_one_line(
    cli, s3: S3, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:  # type: ignore[no-untyped-def]
    """No credentials, an endpoint nobody answers, a bucket that does not exist: the worker
    (which writes) and the readers say so in one line, exit 2, before opening the database
    or loading a model, and leave nothing behind."""
    monkeypatch.setenv("DREAMRATE_STORAGE_URL", s3.url())
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    refused(cli(*command), "DREAMRATE_STORAGE_URL", "no S3 credentials", "AWS_ACCESS_KEY_ID")

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIADREAMRATETESTKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
    port = closed_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    refused(cli(*command), "DREAMRATE_STORAGE_URL", f"cannot reach http://127.0.0.1:{port}")

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    monkeypatch.setenv("DREAMRATE_STORAGE_URL", f"s3://{s3.bucket}-nope/images")
    refused(cli(*command), f"bucket '{s3.bucket}-nope' does not exist")


def test_a_malformed_store_url_is_refused_as_a_setting(
    cli, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DREAMRATE_STORAGE_URL", "s3://KEY:secret-in-url@Bucket/images")
    line = refused(cli("worker"), "DREAMRATE_STORAGE_URL", "not the URL")
    assert "secret-in-url" not in line
    for url in ("https://bucket/images", "s3://bucket/a/../b", "s3://b"):
        with pytest.raises(ConfigError, match="DREAMRATE_STORAGE_URL"):
            load_settings(storage={"url": url})


@pytest.fixture
def iam(s3: S3) -> Iterator[dict[str, tuple[str, str]]]:
    """Two IAM users on the server, one who may do anything in S3 and one who may only read,
    with IAM checks on for the test (moto enforces them only when asked)."""
    import boto3
    from moto.core.authorization import enable_iam_authentication

    client = boto3.client(
        "iam",
        endpoint_url=s3.endpoint,
        region_name="us-east-1",
        aws_access_key_id="AKIADREAMRATETESTKEY",
        aws_secret_access_key=S3_SECRET_KEY,
    )
    # AWS checks a listing against s3:ListBucket; moto against the call's own name.
    reading = ["s3:GetObject", "s3:ListBucket", "s3:ListObjectsV2"]
    actions = {"writer": ["s3:*"], "reader": reading}
    keys = {}
    for name, allowed in actions.items():
        user = f"{name}-{s3.bucket}"
        client.create_user(UserName=user)
        statement = {"Effect": "Allow", "Action": allowed, "Resource": "*"}
        client.put_user_policy(
            UserName=user,
            PolicyName="s3",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [statement]}),
        )
        key = client.create_access_key(UserName=user)["AccessKey"]
        keys[name] = (key["AccessKeyId"], key["SecretAccessKey"])
    with enable_iam_authentication():
        yield keys


def test_refused_credentials_and_a_read_only_key_fail_at_start_without_showing_them(
    cli, s3: S3, iam: dict[str, tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DREAMRATE_STORAGE_URL", s3.url())
    writer_id, writer_secret = iam["writer"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", writer_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)  # not this user's secret
    line = refused(cli("worker"), "refused these credentials", "SignatureDoesNotMatch")
    assert S3_SECRET_KEY not in line and writer_secret not in line and writer_id not in line

    reader_id, reader_secret = iam["reader"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", reader_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", reader_secret)
    line = refused(cli("worker"), f"{s3.url()} refuses writes", "AccessDenied")
    assert reader_secret not in line
    # Reading is all a reader needs: the export goes ahead (and finds no images to copy).
    assert cli("db", "upgrade").code == 0
    exported = cli("export", "dataset", "--out", "ds")
    assert exported.code == 0, exported.err

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", writer_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", writer_secret)
    S3Store.from_url(s3.url()).check(write=True)


class _BucketGoneAfterFirstImage(S3Store):
    """The real store, whose bucket an operator deletes right after the first image of the
    batch lands: every later write is refused by the server itself (NoSuchBucket)."""

    def __init__(self, s3: S3) -> None:
        super().__init__(s3.bucket, "images")
        self.s3 = s3
        self.puts = 0

    def put(self, relative: str, data: bytes) -> None:
        super().put(relative, data)
        self.puts += 1
        if self.puts == 1:
            self.s3.drop_bucket()


@pytest.fixture(scope="module")
def pipelines(tiny_models):  # type: ignore[no-untyped-def]
    from dreamrate.generation.worker import PipelineCache

    cache = PipelineCache(device="cpu")
    cache.get(str(tiny_models[0]))
    return cache


async def test_a_store_that_refuses_writes_mid_batch_gives_the_jobs_back_and_loses_none(
    engine, s3: S3, pipelines, tiny_models, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    """Two jobs in one batch; the store refuses the second job's image. The first job is
    done; the second goes back to the queue with the reason, its attempt not counted and no
    image row; the worker claims nothing while the store refuses a test write (waiting 1 s,
    2 s, ... as for a database outage) and serves the job once the bucket is back."""
    from dreamrate.db.models import JobStatus
    from dreamrate.db.users import ensure_user
    from dreamrate.generation.queue import JobRepository
    from dreamrate.generation.worker import GenerationWorker
    from tests.generation.conftest import enqueue

    repo = JobRepository(engine, max_attempts=1, per_user_cap=10)
    tiny = str(tiny_models[0])
    first, second = [
        await enqueue(repo, (await ensure_user(engine, i, f"user{i}")).id, f"p{i}", model=tiny)
        for i in (1, 2)
    ]
    store = _BucketGoneAfterFirstImage(s3)
    waits: list[float] = []
    seen: dict[str, object] = {}

    async def record(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 1:  # the store refuses the test write: nothing was claimed since
            seen["second"] = await repo.get(second.id)
            seen["images"] = await repo.images(second.id)
            s3.make_bucket()
        else:
            worker.stop.set()

    worker = GenerationWorker(
        repo=repo, store=store, pipelines=pipelines, worker_id="w", max_batch=4, sleep=record
    )
    caplog.set_level(logging.INFO, logger="dreamrate.generation.worker")
    await worker.run()

    assert waits == [1.0, worker.poll_interval]
    back = seen["second"]
    assert back.status is JobStatus.QUEUED and back.attempts == 0  # type: ignore[attr-defined]
    assert back.error.startswith("image store: DREAMRATE_STORAGE_URL: cannot write s3://")  # type: ignore[attr-defined]
    assert f"bucket '{s3.bucket}' does not exist" in back.error  # type: ignore[attr-defined]
    assert seen["images"] == []
    done = [await repo.get(job.id) for job in (first, second)]
    assert [job.status for job in done] == [JobStatus.DONE, JobStatus.DONE]  # type: ignore[union-attr]
    (image,) = await repo.images(second.id)
    assert hashlib.sha256(store.read(image.path)).hexdigest() == image.sha256
    lines = [r.getMessage() for r in caplog.records]
    assert any("its unstored job(s) went back to the queue" in line for line in lines)
    assert any(
        line.startswith("image store unavailable: DREAMRATE_STORAGE_URL")
        and line.endswith("retrying in 1s")
        for line in lines
    )


def test_the_secret_key_is_scrubbed_from_logs(s3: S3) -> None:
    from dreamrate.core.log import SecretFilter, configure_logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        configure_logging("INFO")
        (handler,) = root.handlers
        (scrub,) = [f for f in handler.filters if isinstance(f, SecretFilter)]
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "key %s", (S3_SECRET_KEY,), None
        )
        scrub.filter(record)
        assert record.getMessage() == "key ***"
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_readers_take_a_folder_or_a_store(tmp_path: Path) -> None:
    from dreamrate.generation.store import FolderStore, as_image_store

    folder = as_image_store(tmp_path)
    assert isinstance(folder, FolderStore) and folder.root == tmp_path
    assert as_image_store(folder) is folder
    with pytest.raises(StorageError, match="is not a folder"):
        (tmp_path / "file").write_text("x")
        FolderStore(tmp_path / "file").check()


def test_the_training_report_shows_images_read_from_the_store(s3: S3, tmp_path: Path) -> None:
    from dreamrate.aesthetic.report import image_grid

    store = S3Store.from_url(s3.url())
    _, relative = store.save(Image.new("RGB", (32, 32), "teal"))
    missing = f"ab/{'0' * 64}.png"
    assert image_grid([relative, missing], [9.0, 1.0], tmp_path / "grid.png", read=store.read)
    assert Image.open(tmp_path / "grid.png").size == (
        160,
        178,
    )  # one tile: the missing one left out
    assert not image_grid([missing], [1.0], tmp_path / "none.png", read=store.read)


def test_generate_prints_each_image_s_place_in_the_store(
    cli, s3: S3, tiny_models, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DREAMRATE_STORAGE_URL", s3.url("gen"))
    monkeypatch.setenv("DREAMRATE_GENERATION_MODEL", str(tiny_models[0]))
    monkeypatch.setenv("DREAMRATE_GENERATION_DEVICE", "cpu")
    result = cli("generate", "a lighthouse", "--images", "2", "--seed", "5", "--steps", "2")
    assert result.code == 0, result.err
    urls = result.out.split()
    assert len(urls) == 2 and sorted(urls) == [
        f"s3://{s3.bucket}/{key}" for key in s3.object_keys()
    ]
    assert not any(path.startswith("data/images") for path in result.changed)


async def test_the_bots_worker_child_reaches_the_store_with_the_environment_it_starts_in(
    s3: S3, sqlite_url: str, tmp_path: Path, tiny_models, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """The bot's worker children are forks of a forkserver that started with an older
    environment: each must run with the bot's environment of when it starts (here the
    store's credentials, set after the forkserver started), as a spawned process would."""
    import asyncio
    import time
    from multiprocessing import forkserver

    from dreamrate.db.engine import create_engine
    from dreamrate.db.migrate import upgrade
    from dreamrate.db.models import JobStatus
    from dreamrate.db.users import ensure_user
    from dreamrate.services import WorkerProcess, build_repository, worker_context
    from tests.generation.conftest import enqueue

    credentials = {n: v for n, v in os.environ.items() if n.startswith("AWS_")}
    for name in credentials:
        monkeypatch.delenv(name)
    worker_context()
    forkserver.ensure_running()  # with no credentials in its environment
    for name, value in credentials.items():
        monkeypatch.setenv(name, value)

    settings = load_settings(
        data_dir=tmp_path / "data",
        database={"url": sqlite_url},
        storage={"url": s3.url()},
        generation={"model": str(tiny_models[0]), "device": "cpu", "poll_interval": 0.1},
    )
    engine = create_engine(sqlite_url)
    await upgrade(engine)
    repo = build_repository(settings, engine)
    user = await ensure_user(engine, 1, "ada")
    job = await enqueue(repo, user.id, "a lighthouse", model=str(tiny_models[0]))
    worker = WorkerProcess(settings)
    running = asyncio.create_task(worker.run())
    try:
        deadline = time.monotonic() + 60
        while (await repo.get(job.id)).status is not JobStatus.DONE:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the worker child rendered nothing"
            await asyncio.sleep(0.1)
    finally:
        worker.stop.set()
        await running
        await engine.dispose()
    (image,) = await repo.images(job.id)
    assert hashlib.sha256(s3.object(f"images/{image.path}")).hexdigest() == image.sha256
