"""Object storage for sources and the processed store: a local folder or an S3 bucket prefix."""

from abc import ABC, abstractmethod

import dagster as dg
from dagster_aws.s3 import S3Resource

from lorechat_pipeline.core.storage import (
    LocalObjectStore,
    ObjectStore,
    S3ObjectStore,
    S3Retries,
    s3_client,
)


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
        # Not `s3.get_client()`: the client gets the pipeline's retries and timeouts (S3Retries);
        # `s3.max_attempts` counts every call, the first included, as its description says.
        retries = S3Retries(attempts=self.s3.max_attempts)
        client = s3_client(
            endpoint_url=self.s3.endpoint_url,
            region=self.s3.region_name,
            aws_access_key_id=self.s3.aws_access_key_id,
            aws_secret_access_key=self.s3.aws_secret_access_key,
            aws_session_token=self.s3.aws_session_token,
            retries=retries,
        )
        return S3ObjectStore(client, self.bucket, self.prefix, retries)

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
