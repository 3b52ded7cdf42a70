"""A real S3-compatible server on 127.0.0.1 for the image store's tests: moto's server mode
(``moto[server]`` from PyPI), one per test process, and a fresh bucket per test.

moto's server is an S3 endpoint in a thread of the test process: it speaks S3's REST API over
HTTP (boto3 cannot tell it from AWS), enforces IAM credentials when asked to, needs no binary
download or container, and installs from the package registry like every other test tool.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import S3_SECRET_KEY

#: The credentials every host of a test has (moto accepts any until IAM is switched on).
S3_ACCESS_KEY = "AKIADREAMRATETESTKEY"


@dataclass(frozen=True)
class S3:
    endpoint: str
    bucket: str
    #: A client of the test's own (the operator's view of the bucket).
    admin: Any

    def url(self, prefix: str = "images") -> str:
        return f"s3://{self.bucket}/{prefix}" if prefix else f"s3://{self.bucket}"

    def object_keys(self) -> list[str]:
        listed = self.admin.list_objects_v2(Bucket=self.bucket)
        return sorted(item["Key"] for item in listed.get("Contents", []))

    def object(self, key: str) -> bytes:
        return bytes(self.admin.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def drop_bucket(self) -> None:
        for key in self.object_keys():
            self.admin.delete_object(Bucket=self.bucket, Key=key)
        self.admin.delete_bucket(Bucket=self.bucket)

    def make_bucket(self) -> None:
        self.admin.create_bucket(Bucket=self.bucket)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3-compatible server on a free port of 127.0.0.1; its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_environment(endpoint: str) -> dict[str, str]:
    """What a host sets to reach the store: the standard AWS variables, nothing else
    (shared files and instance metadata are shut out, so the test machine's own AWS set-up
    never leaks in)."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }


@pytest.fixture
def s3(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3]:
    """A fresh bucket on the server, and this process's environment set to reach it."""
    import boto3

    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    for name, value in s3_environment(s3_server).items():
        monkeypatch.setenv(name, value)
    admin = boto3.client(
        "s3",
        endpoint_url=s3_server,
        region_name="us-east-1",
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET_KEY,
    )
    store = S3(s3_server, f"dreamrate-{uuid.uuid4().hex[:12]}", admin)
    store.make_bucket()
    yield store
    if store.bucket in {b["Name"] for b in admin.list_buckets()["Buckets"]}:
        store.drop_bucket()
