"""Object storage for sources and the processed store: a local folder or an S3 bucket prefix."""

from abc import ABC, abstractmethod

import dagster as dg
from dagster_aws.s3 import S3Resource

from lorechat_pipeline.core.storage import LocalObjectStore, ObjectStore, S3ObjectStore


class ObjectStoreResource(dg.ConfigurableResource, ABC):
    @abstractmethod
    def open(self) -> ObjectStore: ...

    @property
    @abstractmethod
    def uri(self) -> str: ...

    def relative_key(self, bucket: str, key: str) -> str | None:
        """The store-relative key of an S3 object, or None when it lies outside this store."""
        return None


class LocalFolderStore(ObjectStoreResource):
    """A folder on local disk (created on first write)."""

    path: str

    def open(self) -> ObjectStore:
        return LocalObjectStore(self.path)

    @property
    def uri(self) -> str:
        return self.path


class S3BucketStore(ObjectStoreResource):
    """A bucket prefix on S3 or an S3-compatible service (`s3.endpoint_url` for MinIO/moto)."""

    bucket: str
    prefix: str = ""
    s3: S3Resource

    def open(self) -> ObjectStore:
        return S3ObjectStore(self.s3.get_client(), self.bucket, self.prefix)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def relative_key(self, bucket: str, key: str) -> str | None:
        if bucket != self.bucket:
            return None
        prefix = self.prefix.strip("/")
        if not prefix:
            return key
        return key[len(prefix) + 1 :] if key.startswith(prefix + "/") else None
