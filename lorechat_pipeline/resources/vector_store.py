"""Vector stores. LanceDB (embedded; a folder or s3:// URI) is the default."""

from abc import ABC, abstractmethod

import dagster as dg

from lorechat_pipeline.core.manifest import IndexManifest
from lorechat_pipeline.core.vector_index import LanceVectorIndex


class VectorStoreResource(dg.ConfigurableResource, ABC):
    @abstractmethod
    def open_for_write(self, manifest: IndexManifest) -> LanceVectorIndex: ...

    @abstractmethod
    def open_for_read(self, manifest: IndexManifest) -> LanceVectorIndex: ...

    @abstractmethod
    def stored_manifest(self, configured: IndexManifest) -> tuple[str, IndexManifest]:
        """The table the configuration points at and the manifest it carries (unchecked)."""


class LanceDBVectorStore(VectorStoreResource):
    uri: str
    # Empty: derived from the manifest (model and chunker), see IndexManifest.default_table_name.
    table_name: str | None = None
    s3_endpoint_url: str | None = None
    aws_region: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None

    def storage_options(self) -> dict[str, str]:
        if not self.uri.startswith("s3://"):
            return {}
        options = {
            "region": self.aws_region,
            "endpoint": self.s3_endpoint_url,
            "aws_access_key_id": self.aws_access_key_id,
            "aws_secret_access_key": self.aws_secret_access_key,
            "allow_http": "true" if (self.s3_endpoint_url or "").startswith("http://") else None,
        }
        return {name: value for name, value in options.items() if value}

    def open_for_write(self, manifest: IndexManifest) -> LanceVectorIndex:
        return LanceVectorIndex.open_or_create(
            self.uri, manifest, self.table_name, self.storage_options()
        )

    def open_for_read(self, manifest: IndexManifest) -> LanceVectorIndex:
        return LanceVectorIndex.open(
            self.uri,
            self.table_name or manifest.default_table_name(),
            expected=manifest,
            storage_options=self.storage_options(),
        )

    def stored_manifest(self, configured: IndexManifest) -> tuple[str, IndexManifest]:
        name = self.table_name or configured.default_table_name()
        index = LanceVectorIndex.open(self.uri, name, storage_options=self.storage_options())
        return name, index.manifest
