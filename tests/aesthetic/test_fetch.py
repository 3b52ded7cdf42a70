"""export manifest --exclude-* and fetch, end to end against a local image server.

The server answers as the web does: images, a 404, one that never answers in time, a page
that is not an image, and an image whose server opts out of AI training (X-Robots-Tag).
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from dreamrate.aesthetic.predictor import save_predictor
from dreamrate.aesthetic.synthetic import write_clip_retrieval
from tests.aesthetic.test_score import DIM, _affine
from tests.test_cli import _one_error_line, run_cli

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40), (240, 240, 240)]


def _png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), colour).save(buffer, format="PNG")
    return buffer.getvalue()


class _Images(BaseHTTPRequestHandler):
    release = threading.Event()

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, kind: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        name = self.path.rsplit("/", 1)[-1]
        if name.startswith("ok-"):
            self._send(200, _png(COLOURS[int(name[3:-4]) % len(COLOURS)]), "image/png")
        elif name == "slow.png":
            self.release.wait(30)  # past the fetch's one-second timeout
            self._send(200, _png(COLOURS[0]), "image/png")
        elif name == "page.png":
            self._send(200, b"<html>not an image</html>", "text/html")
        elif name == "noai.png":
            self._send(200, _png(COLOURS[1]), "image/png", X_Robots_Tag="noai")
        else:
            self._send(404, b"not found", "text/plain")


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    _Images.release.set()
    httpd.shutdown()
    httpd.server_close()
    _Images.release.clear()


def _manifest(tmp_path: Path, urls: list[str], *extra: str) -> tuple[Path, object]:
    """Scored shards whose metadata holds ``urls``, and a manifest keeping every row."""
    source = tmp_path / "laion"
    write_clip_retrieval(source, shards=1, rows=len(urls), dim=DIM, dtype="float16", seed=2)
    (meta,) = (source / "metadata").glob("*.parquet")
    table = pq.read_table(meta)
    table = table.set_column(table.column_names.index("url"), "url", pa.array(urls))
    pq.write_table(table, meta)
    predictor = save_predictor(_affine(), tmp_path / "p")
    scored = run_cli(
        "score", "--predictor", str(predictor), "--embeddings", str(source),
        "--out", str(tmp_path / "scored"),
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr
    out = tmp_path / "manifest"
    made = run_cli(
        "export", "manifest", "--scores", str(tmp_path / "scored" / "scores"),
        "--top-fraction", "1", "--out", str(out), *extra,
    )  # fmt: skip
    return out, made


def test_exclusion_lists_drop_what_they_name_before_download(tmp_path: Path) -> None:
    urls = [f"http://{host}/img/ok-{i}.png" for i, host in enumerate(
        ["a.example.com", "cdn.a.example.com", "badexample.com", "b.org", "b.org", "c.net"]
    )]  # fmt: skip
    (tmp_path / "urls.txt").write_text(f"# opted out\n{urls[3]}\n\n")
    (tmp_path / "domains.txt").write_text(
        "www.example.com  # and every host below it\n*.b.org:8080\n"
    )
    out, made = _manifest(
        tmp_path, urls,
        "--exclude-urls", str(tmp_path / "urls.txt"),
        "--exclude-domains", str(tmp_path / "domains.txt"),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr  # type: ignore[attr-defined]
    assert "4 left out by the exclusion lists" in made.stdout  # type: ignore[attr-defined]
    kept = set(pq.read_table(out / "part-00000.parquet").column("url").to_pylist())
    # badexample.com is not below example.com; "*.b.org:8080" names b.org.
    assert kept == {urls[2], urls[5]}
    record = json.loads((out / "manifest.json").read_text())
    assert record["excluded"] == {"urls": 1, "domains": 3} and record["rows_out"] == 2
    # Lists that drop everything leave nothing behind; a missing list is one line.
    (tmp_path / "all.txt").write_text("example.com\nb.org\nc.net\nbadexample.com\n")
    _, everything = _manifest(
        tmp_path / "all", urls, "--exclude-domains", str(tmp_path / "all.txt")
    )
    _one_error_line(everything, "drop every kept row", "nothing written")  # type: ignore[arg-type]
    assert not (tmp_path / "all" / "manifest").exists()
    _, missing = _manifest(tmp_path / "m", urls, "--exclude-urls", str(tmp_path / "nope.txt"))
    _one_error_line(missing, "--exclude-urls", "does not exist")  # type: ignore[arg-type]


def test_fetch_keeps_the_good_images_and_reports_the_bad(tmp_path: Path, server: str) -> None:
    good = [f"http://{server}/img/ok-{i}.png" for i in range(5)]
    bad = [f"http://{server}/img/{n}" for n in ("missing.png", "slow.png", "page.png", "noai.png")]
    manifest, made = _manifest(tmp_path, good + bad)
    assert made.returncode == 0, made.stderr  # type: ignore[attr-defined]
    out = tmp_path / "images"
    args = ["fetch", "--manifest", str(manifest), "--out", str(out), "--image-size", "32"]
    args += ["--threads", "4", "--timeout", "1"]
    fetched = run_cli(*args)
    assert fetched.returncode == 0, fetched.stderr
    assert "fetched 5 of 9 images" in fetched.stdout, fetched.stdout
    assert "3 failed to download, 1 failed to decode or resize" in fetched.stdout
    record = json.loads((out / "_dreamrate" / "fetch.json").read_text())
    assert record["status"] == "done" and record["fetched"] == 5 and record["rows"] == 9
    reasons = " | ".join(record["failures"])
    assert "404" in reasons and "X-Robots-Tag" in reasons and "timed out" in reasons.lower()
    # Each kept image is square at the asked size, with its caption and aesthetic score.
    samples = sorted(out.glob("*/*.jpg"))
    assert len(samples) == 5
    by_url = {}
    for image_path in samples:
        meta = json.loads(image_path.with_suffix(".json").read_text())
        assert meta["status"] == "success" and np.isfinite(meta["aesthetic"])
        assert image_path.with_suffix(".txt").read_text()
        with Image.open(image_path) as image:
            assert image.size == (32, 32)
            by_url[meta["url"]] = np.asarray(image.convert("RGB"), dtype=float).mean(axis=(0, 1))
    assert set(by_url) == set(good)
    for i, url in enumerate(good):  # the right picture under each URL
        assert np.abs(by_url[url] - COLOURS[i]).max() < 12

    # Again into the same folder: refused; --resume finds nothing left; another manifest's
    # folder cannot be resumed.
    again = run_cli(*args)
    _one_error_line(again, "already exists", "--resume", "--force")
    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0 and "fetched 5 of 9 images" in resumed.stdout
    other, _ = _manifest(tmp_path / "other", good[:2])
    wrong = run_cli("fetch", "--manifest", str(other), "--out", str(out), "--resume")
    _one_error_line(wrong, "another manifest", "--force")


def test_fetch_bad_input_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    no_manifest = run_cli(
        "fetch", "--manifest", str(tmp_path / "empty"), "--out", str(tmp_path / "o")
    )
    _one_error_line(no_manifest, "no manifest.json", "dreamrate export manifest")
    assert not (tmp_path / "o").exists()
