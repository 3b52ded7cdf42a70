"""Ray as a maintainer runs it: the README's cluster recipe against a local two-node Ray
started with ``ray start``, and a Ray worker killed in the middle of a task.

The cluster is this test module's own: free ports, its own temp folder, and ``ray start
--block`` processes in their own session, stopped with SIGTERM (never ``ray stop``, which
would stop every Ray on the machine, another test worker's included).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from dreamrate.aesthetic.filtering.engines import run_local, run_ray
from dreamrate.aesthetic.filtering.reader import discover_shards
from dreamrate.aesthetic.predictor import Predictor, save_predictor
from dreamrate.aesthetic.synthetic import write_clip_retrieval
from tests.aesthetic.test_score import DIM, _affine
from tests.test_cli import run_cli

pytestmark = pytest.mark.needs("ray")

RAY = Path(sys.executable).parent / "ray"
README = Path(__file__).resolve().parents[2] / "README.md"
NAMES = ("scores_00.parquet", "scores_01.parquet", "scores_02.parquet")


def _free_ports(n: int) -> list[int]:
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class Cluster:
    address: str
    temp_dir: Path
    nodes: list[subprocess.Popen[bytes]]


def _start_node(temp_dir: Path, *, head_port: int, head: bool) -> subprocess.Popen[bytes]:
    agent, grpc, metrics, runtime_env, dashboard = _free_ports(5)
    args = [str(RAY), "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1"]
    args += ["--object-store-memory", str(80 * 2**20), "--temp-dir", str(temp_dir)]
    args += ["--disable-usage-stats", "--dashboard-agent-listen-port", str(agent)]
    args += ["--dashboard-agent-grpc-port", str(grpc), "--metrics-export-port", str(metrics)]
    args += ["--runtime-env-agent-port", str(runtime_env)]
    if head:
        args += ["--head", "--port", str(head_port), "--include-dashboard", "false"]
        args += ["--dashboard-port", str(dashboard)]
    else:
        args += ["--address", f"127.0.0.1:{head_port}"]
    # Without token authentication, as the drivers here (this process, the CLI's) expect:
    # a head started with the mode unset turns it on when ~/.ray/auth_token exists.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    with (temp_dir / f"{'head' if head else 'worker'}.log").open("wb") as log:
        return subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def _stop(node: subprocess.Popen[bytes]) -> None:
    if node.poll() is None:
        node.terminate()  # `ray start --block` drains and stops the processes it started
        with contextlib.suppress(subprocess.TimeoutExpired):
            node.wait(timeout=60)
    with_children = node.pid  # the node's session: raylet, GCS, workers
    with contextlib.suppress(ProcessLookupError):
        os.killpg(with_children, signal.SIGKILL)
    node.wait()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A head and one worker node, one CPU each; this process is connected as a driver."""
    import ray

    # Short: Ray's Unix socket paths live under it and must stay under 108 bytes.
    temp_dir = Path(tempfile.mkdtemp(prefix="dr-ray-", dir="/tmp"))
    (port,) = _free_ports(1)
    nodes = [_start_node(temp_dir, head_port=port, head=True)]
    try:
        nodes.append(_start_node(temp_dir, head_port=port, head=False))
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            for node in nodes:
                if node.poll() is not None:
                    logs = "".join(p.read_text()[-2000:] for p in temp_dir.glob("*.log"))
                    pytest.fail(f"a ray node exited with {node.returncode}:\n{logs}")
            try:
                if not ray.is_initialized():
                    ray.init(address=address, log_to_driver=False, configure_logging=False)
                if sum(n["Alive"] for n in ray.nodes()) == 2:
                    break
            except ConnectionError:
                pass  # the head is still starting
            assert time.monotonic() < deadline, "the two-node Ray did not come up in 120 s"
            time.sleep(0.2)
        yield Cluster(address, temp_dir, nodes)
    finally:
        ray.shutdown()
        for node in reversed(nodes):
            _stop(node)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    folder = tmp_path / "laion"
    write_clip_retrieval(folder, shards=3, rows=3000, dim=DIM, dtype="float16", pad=2, seed=4)
    return folder


def _readme_recipe() -> list[str]:
    """The README's `dreamrate score ... --engine ray` command, as arguments."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    (block,) = [b for b in blocks if "--engine ray" in b]
    return shlex.split(block.replace("\\\n", " "))


def _with(args: list[str], **values: str) -> list[str]:
    out = list(args)
    for option, value in values.items():
        flag = "--" + option.replace("_", "-")
        assert flag in out, f"the README's recipe lost {flag}"
        out[out.index(flag) + 1] = value
    return out


def test_the_readme_cluster_recipe_scores_on_both_nodes_like_one_process(
    cluster: Cluster, tmp_path: Path, source: Path
) -> None:
    predictor = save_predictor(_affine(), tmp_path / "p")
    local = run_cli(
        "score", "--predictor", str(predictor), "--embeddings", str(source),
        "--out", str(tmp_path / "local"),
    )  # fmt: skip
    assert local.returncode == 0, local.stderr
    recipe = _readme_recipe()
    assert recipe[:2] == ["dreamrate", "score"] and "HEAD:6379" in recipe
    args = _with(
        recipe[1:],
        predictor=str(predictor),
        embeddings=str(source),
        out=str(tmp_path / "ray"),
        ray_address=cluster.address,
    )
    distributed = run_cli(*args)
    assert distributed.returncode == 0, distributed.stderr
    # SPREAD puts the three one-CPU tasks on both nodes.
    assert "scored 9,000 rows in 3 shard(s)" in distributed.stdout
    assert "on 2 Ray node(s)" in distributed.stdout, distributed.stdout
    for name in NAMES:
        assert (tmp_path / "ray" / "scores" / name).read_bytes() == (
            tmp_path / "local" / "scores" / name
        ).read_bytes()
    # The manifests made from either score folder are the same rows.
    manifests = []
    for run in ("local", "ray"):
        made = run_cli(
            "export", "manifest", "--scores", str(tmp_path / run / "scores"),
            "--top-fraction", "0.1", "--out", str(tmp_path / f"manifest-{run}"),
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        manifests.append((tmp_path / f"manifest-{run}" / "part-00000.parquet").read_bytes())
    assert manifests[0] == manifests[1]


@dataclass
class PausingPredictor(Predictor):
    """Scores like its base, except that the first task to build its kernel writes its pid
    to ``marker`` and waits there until the test kills its worker process."""

    marker: str = ""

    def affine(self) -> tuple[np.ndarray, float]:
        try:
            fd = os.open(self.marker + ".lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return super().affine()  # the retry, or another shard
        os.close(fd)
        Path(self.marker + ".tmp").write_text(str(os.getpid()))
        os.replace(self.marker + ".tmp", self.marker)
        threading.Event().wait(120)  # killed here
        raise RuntimeError("the test did not kill this worker")


def test_a_ray_worker_killed_mid_task_is_retried_to_byte_identical_files(
    cluster: Cluster, tmp_path: Path, source: Path
) -> None:
    import ray

    # Ray workers unpickle the predictor; this module is not importable there.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    shards, problems = discover_shards(str(source))
    assert len(shards) == 3 and not problems
    base = _affine()
    reference = run_local(shards, base, str(tmp_path / "local"))
    assert all(r.error is None for r in reference)
    marker = tmp_path / "paused-worker"
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(Predictor)}
    pausing = PausingPredictor(**fields, marker=str(marker))
    assert pausing.sha256 == base.sha256

    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(run_ray, shards, pausing, str(tmp_path / "ray"))
        deadline = time.monotonic() + 120
        while not marker.exists():  # the paused task has said which process it is
            assert not running.done(), running.result()
            assert time.monotonic() < deadline, "no Ray task reached the kernel in 120 s"
            time.sleep(0.05)
        killed = int(marker.read_text())
        assert killed != os.getpid()
        os.kill(killed, signal.SIGKILL)
        results = running.result(timeout=180)

    assert sorted(r.n for r in results) == [0, 1, 2]
    assert all(r.error is None and not r.skipped for r in results), results
    assert f"pid {killed}" not in {r.worker for r in results}  # its shard was run again
    for name in NAMES:
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == list(NAMES)  # no leftovers
