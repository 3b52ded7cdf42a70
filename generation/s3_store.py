"""The image store in S3-compatible object storage (``DREAMRATE_STORAGE_URL=s3://bucket/prefix``).

boto3 finds the endpoint, region and credentials as every S3 client does: ``AWS_ENDPOINT_URL``
(or ``AWS_ENDPOINT_URL_S3``), ``AWS_REGION`` (or ``AWS_DEFAULT_REGION``),
``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``, then its shared files and instance
roles. No error this module raises names a credential; botocore's own loggers are kept at
WARNING (:mod:`dreamrate.core.log`), and the secret key is scrubbed from every log line.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from dreamrate.core.errors import StorageError
from dreamrate.core.settings import parse_s3_url
from dreamrate.generation.store import ImageStore, ImageUnreadable, checked_path

if TYPE_CHECKING:
    import boto3

__all__ = ["S3Store"]

logger = logging.getLogger(__name__)

SETTING = "DREAMRATE_STORAGE_URL"
#: Written and deleted again by :meth:`S3Store.check` to prove writes are accepted.
_PROBE = ".dreamrate-write-check"
#: The answers that say which object is missing, not that the store is.
_NO_OBJECT = {"NoSuchKey", "404", "NotFound"}
_NO_BUCKET = {"NoSuchBucket"}
_REFUSED = {
    "AccessDenied",
    "403",
    "Forbidden",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
}


def _endpoint_configured() -> bool:
    return bool(os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))


class S3Store(ImageStore):
    """The image store as objects ``<prefix>/ab/<sha256>.png`` in one bucket.

    Each image is one ``PutObject`` with its MD5, so the server stores all of it or none;
    retries are botocore's standard mode (3 attempts) with short connect timeouts, so an
    unreachable store fails a batch in seconds, not minutes.

    Parameters
    ----------
    bucket
        The bucket; it must exist (dreamrate never creates one).
    prefix
        Folder inside the bucket ('' for its root).
    """

    def __init__(self, bucket: str, prefix: str = "") -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._session: boto3.session.Session | None = None
        self._client: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> S3Store:
        """The store at ``s3://bucket/prefix``.

        Raises
        ------
        StorageError
            when the URL is malformed (settings validate it first).
        """
        try:
            return cls(*parse_s3_url(url))
        except ValueError as exc:
            raise StorageError(f"{SETTING}: {exc}") from None

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    def _key(self, relative: str) -> str:
        relative = checked_path(relative)
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def client(self) -> Any:
        """The boto3 S3 client, made at first use (boto3 clients are thread-safe)."""
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                self._session = boto3.session.Session()
                self._client = self._session.client(
                    "s3",
                    # AWS_REGION is what most S3 clients read; boto3 reads AWS_DEFAULT_REGION.
                    region_name=os.environ.get("AWS_REGION") or None,
                    config=Config(
                        connect_timeout=5,
                        read_timeout=30,
                        retries={"mode": "standard", "max_attempts": 3},
                        # Other S3 servers answer path-style requests; virtual hosts need DNS.
                        s3={"addressing_style": "path" if _endpoint_configured() else "auto"},
                        # The MD5 sent with each image is the integrity check; the newer
                        # streaming checksums are not understood by every S3-compatible server.
                        request_checksum_calculation="when_required",
                        response_checksum_validation="when_required",
                    ),
                )
            return self._client

    def _endpoint(self) -> str:
        parts = urlsplit(str(self.client().meta.endpoint_url))
        return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")

    def _reason(self, exc: Exception) -> tuple[str, bool]:
        """A one-line reason for a botocore error (never a credential), and whether it is
        about one object only."""
        from botocore.exceptions import (
            ClientError,
            ConnectionError,
            CredentialRetrievalError,
            HTTPClientError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", False
        if isinstance(exc, CredentialRetrievalError):
            return "the S3 credentials could not be loaded", False
        if isinstance(exc, ConnectionError | HTTPClientError):
            return f"cannot reach {self._endpoint()} ({type(exc).__name__})", False
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code") or "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _NO_BUCKET:
                return f"bucket {self.bucket!r} does not exist at {self._endpoint()}", False
            if code in _NO_OBJECT:
                return "no such image", True
            if code in _REFUSED:
                return (
                    f"{self._endpoint()} refused these credentials or this bucket ({code})",
                    False,
                )
            return f"{self._endpoint()} answered {code or status}", False
        return f"{type(exc).__name__} talking to {self._endpoint()}", False

    def _fail(self, exc: Exception, doing: str) -> StorageError:
        reason, one_object = self._reason(exc)
        if one_object:
            return ImageUnreadable(f"{SETTING}: cannot {doing} ({reason})")
        return StorageError(f"{SETTING}: cannot {doing} ({reason})")

    def put(self, relative: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        key = self._key(relative)
        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        try:
            self.client().put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType="image/png", ContentMD5=md5
            )
        except (BotoCoreError, ClientError) as exc:
            error = self._fail(exc, f"write s3://{self.bucket}/{key}")
            raise StorageError(error.message) from None  # a refused write is the store's

    def read(self, relative: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        key = self._key(relative)
        try:
            answer = self.client().get_object(Bucket=self.bucket, Key=key)
            return bytes(answer["Body"].read())
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, f"read s3://{self.bucket}/{key}") from None

    def location(self, relative: str) -> str:
        return f"s3://{self.bucket}/{self._key(relative)}"

    def check(self, *, write: bool = False) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client()
        assert self._session is not None
        if self._session.get_credentials() is None:
            raise StorageError(
                f"{SETTING}: {self.url}: no S3 credentials: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY"
            )
        try:
            # A listing, not HeadBucket: the same permission (s3:ListBucket), but its refusals
            # come with S3's error code (a HEAD answer has no body to say why).
            client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        except (BotoCoreError, ClientError) as exc:
            reason, _ = self._reason(exc)
            raise StorageError(f"{SETTING}: {self.url} cannot be used ({reason})") from None
        if write:
            probe = self._key(_PROBE)
            try:
                client.put_object(Bucket=self.bucket, Key=probe, Body=b"")
            except (BotoCoreError, ClientError) as exc:
                reason, _ = self._reason(exc)
                raise StorageError(f"{SETTING}: {self.url} refuses writes ({reason})") from None
            with contextlib.suppress(BotoCoreError, ClientError):  # write-only keys may not
                client.delete_object(Bucket=self.bucket, Key=probe)
        logger.info("image store %s at %s", self.url, self._endpoint())
