"""Object stores: a local folder and an S3 bucket prefix behind one small interface.

Sources, the processed store and sidecar lookups all go through this, so every stage runs the
same way on a laptop folder and on S3 (or any S3-compatible endpoint such as MinIO or moto).
"""

import logging
import os
import posixpath
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lorechat_pipeline.core.backends.retry import Backoff

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ObjectInfo:
    key: str  # relative to the store root, always with forward slashes
    size: int
    etag: str  # changes whenever the bytes may have changed
    version_id: str | None
    last_modified: datetime


class ObjectNotFound(KeyError):
    pass


class ObjectUnavailable(OSError):
    """The store kept failing to deliver an object's bytes: an outage, not a bad document."""


@dataclass(frozen=True)
class S3Retries:
    """How every S3 client of the pipeline retries and times out (the one place it is set).

    botocore's "standard" mode retries 500/502/503/504, throttling (`SlowDown`), connection
    errors and timeouts, with exponential backoff and full jitter. A body cut short after a
    successful GetObject is not botocore's to retry: S3ObjectStore reads it again, as often.
    """

    attempts: int = 5  # calls in all, the first included
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 30.0  # per socket read, not per object

    def client_config(self) -> Any:
        from botocore.config import Config

        return Config(
            retries={"mode": "standard", "total_max_attempts": self.attempts},
            connect_timeout=self.connect_timeout_seconds,
            read_timeout=self.read_timeout_seconds,
        )


def s3_client(
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    aws_access_key_id: str | None = None,
    aws_secret_access_key: str | None = None,
    aws_session_token: str | None = None,
    retries: S3Retries = S3Retries(),
) -> Any:
    """An S3 client with the pipeline's retries and timeouts (credentials: these, else boto3's
    own chain)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=aws_access_key_id,
        aws_secret_access_key=aws_secret_access_key,
        aws_session_token=aws_session_token,
        # Signature version 4 named: botocore would sign presigned POST policies with the
        # deprecated version 2 in us-east-1, which S3 refuses in regions opened since 2014.
        config=retries.client_config().merge(Config(signature_version="s3v4")),
    )


class ObjectStore(ABC):
    @property
    @abstractmethod
    def uri(self) -> str: ...

    @abstractmethod
    def list_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """All objects under `prefix`, in no particular order; streaming, never materialised."""

    @abstractmethod
    def head(self, key: str) -> ObjectInfo | None: ...

    @abstractmethod
    def read(self, key: str) -> bytes: ...

    def read_versioned(self, key: str) -> tuple[bytes, str | None]:
        """The bytes and the version id they were read at (None where unversioned)."""
        return self.read(key), None

    @abstractmethod
    def write(self, key: str, data: bytes) -> None:
        """Replace `key` atomically: a reader sees the old bytes or the new, never a torn file."""

    @abstractmethod
    def delete(self, keys: list[str]) -> None: ...

    def delete_prefix(self, prefix: str, *, keep: str | None = None) -> int:
        """Delete every object under `prefix` (but `keep`); returns how many were deleted."""
        keys = [info.key for info in self.list_objects(prefix) if info.key != keep]
        self.delete(keys)
        return len(keys)

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def child(self, key: str) -> str:
        return f"{self.uri.rstrip('/')}/{key}"


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid object key: {key!r}")
    return key


class LocalObjectStore(ObjectStore):
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    @property
    def uri(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*_check_key(key).split("/"))

    def _info(self, key: str, stat: os.stat_result) -> ObjectInfo:
        return ObjectInfo(
            key=key,
            size=stat.st_size,
            # mtime+size is a cheap change detector; the content hash confirms a real change.
            etag=f"{stat.st_mtime_ns:x}-{stat.st_size:x}",
            version_id=None,
            last_modified=datetime.fromtimestamp(stat.st_mtime, tz=UTC),
        )

    def list_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self.root / prefix if prefix else self.root
        if not base.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(base):
            # Deterministic order makes runs and logs reproducible.
            dirnames.sort()
            for name in sorted(filenames):
                full = Path(dirpath) / name
                try:
                    stat = full.stat()
                except FileNotFoundError:
                    continue  # deleted while listing
                if not full.is_file():
                    continue
                key = full.relative_to(self.root).as_posix()
                if prefix and not key.startswith(prefix):
                    continue
                yield self._info(key, stat)

    def head(self, key: str) -> ObjectInfo | None:
        try:
            stat = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return self._info(key, stat)

    def read(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as error:
            raise ObjectNotFound(key) from error

    def write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            path = self._path(key)
            path.unlink(missing_ok=True)
            self._prune_empty_parents(path.parent)

    def _prune_empty_parents(self, directory: Path) -> None:
        while directory != self.root and directory.is_relative_to(self.root):
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent


class S3ObjectStore(ObjectStore):
    def __init__(
        self, client: Any, bucket: str, prefix: str = "", retries: S3Retries = S3Retries()
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.retries = retries

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _full(self, key: str) -> str:
        return self.prefix + key

    @staticmethod
    def _etag(raw: str) -> str:
        return raw.strip('"')

    def list_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            for item in page.get("Contents", []):
                key = item["Key"][len(self.prefix) :]
                if not key or key.endswith("/"):
                    continue  # "folder" placeholder objects
                yield ObjectInfo(
                    key=key,
                    size=int(item["Size"]),
                    etag=self._etag(item["ETag"]),
                    version_id=None,
                    last_modified=item["LastModified"],
                )

    def head(self, key: str) -> ObjectInfo | None:
        try:
            response = self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        except self.client.exceptions.ClientError as error:
            if _is_missing(error):
                return None
            raise
        return ObjectInfo(
            key=key,
            size=int(response["ContentLength"]),
            etag=self._etag(response["ETag"]),
            version_id=response.get("VersionId"),
            last_modified=response["LastModified"],
        )

    def read(self, key: str) -> bytes:
        return self.read_versioned(key)[0]

    def read_versioned(self, key: str) -> tuple[bytes, str | None]:
        from botocore.exceptions import HTTPClientError, IncompleteReadError

        for attempt in range(self.retries.attempts):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=self._full(key))
            except self.client.exceptions.ClientError as error:
                if _is_missing(error):
                    raise ObjectNotFound(key) from error
                raise
            try:
                # A short body (fewer bytes than Content-Length) raises; it is never returned.
                body: bytes = response["Body"].read()
            except (HTTPClientError, IncompleteReadError) as error:
                if attempt + 1 == self.retries.attempts:
                    raise ObjectUnavailable(
                        f"{self.child(key)}: the body could not be read in "
                        f"{self.retries.attempts} attempts: {error}"
                    ) from error
                logger.info("reading %s failed (%s); reading it again", self.child(key), error)
                Backoff().wait(attempt)
                continue
            version = response.get("VersionId")
            return body, None if version in (None, "null") else version
        raise AssertionError("unreachable: the last attempt returns or raises")

    def write(self, key: str, data: bytes) -> None:
        # A single PUT is atomic on S3: readers see the old object or the new one.
        self.client.put_object(Bucket=self.bucket, Key=self._full(_check_key(key)), Body=data)

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1,000 keys
            batch = keys[start : start + 1000]
            if batch:
                self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": self._full(k)} for k in batch], "Quiet": True},
                )


def _is_missing(error: Any) -> bool:
    """A 404, by code or, when the error body was cut short (no code to parse), by status."""
    response = error.response
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status == 404 or response.get("Error", {}).get("Code") in ("NoSuchKey", "NotFound")


def split_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def is_s3_uri(uri: str) -> bool:
    return uri.startswith("s3://")


def join_key(*parts: str) -> str:
    return posixpath.join(*[p.strip("/") for p in parts if p.strip("/")])


def object_store_at(
    uri: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    aws_access_key_id: str | None = None,
    aws_secret_access_key: str | None = None,
) -> ObjectStore:
    """The store at a folder path or s3:// URI (credentials: these, else boto3's own chain)."""
    if not is_s3_uri(uri):
        return LocalObjectStore(uri)
    bucket, prefix = split_s3_uri(uri)
    client = s3_client(
        endpoint_url=endpoint_url,
        region=region,
        aws_access_key_id=aws_access_key_id,
        aws_secret_access_key=aws_secret_access_key,
    )
    return S3ObjectStore(client, bucket, prefix)
