"""Vector stores. LanceDB (embedded; a folder or s3:// URI) is the default."""

from abc import ABC, abstractmethod

import dagster as dg

from lorechat_pipeline.core.aliases import AliasStore
from lorechat_pipeline.core.manifest import IndexManifest
from lorechat_pipeline.core.storage import object_store_at
from lorechat_pipeline.core.vector_index import (
    IndexNotFound,
    LanceVectorIndex,
    lance_storage_options,
)


class VectorStoreResource(dg.ConfigurableResource, ABC):
    @abstractmethod
    def open_for_write(self, manifest: IndexManifest) -> LanceVectorIndex:
        """The version this configuration builds (created on first use)."""

    @abstractmethod
    def open_for_read(self, manifest: IndexManifest) -> LanceVectorIndex:
        """The version this configuration builds, which must exist."""

    @abstractmethod
    def open_current(self, manifest: IndexManifest) -> LanceVectorIndex:
        """The version the alias names (what searches read); the embedder must match."""

    @abstractmethod
    def open_version(self, table: str) -> LanceVectorIndex:
        """A version by name, whatever its manifest (for comparisons and inspection)."""

    @abstractmethod
    def stored_manifest(self, configured: IndexManifest) -> tuple[str, IndexManifest]:
        """The table the configuration points at and the manifest it carries (unchecked)."""

    @abstractmethod
    def target_table(self, manifest: IndexManifest) -> str: ...

    @abstractmethod
    def aliases(self) -> AliasStore: ...

    @abstractmethod
    def versions(self) -> list[str]: ...

    @abstractmethod
    def drop_version(self, table: str) -> None: ...


class LanceDBVectorStore(VectorStoreResource):
    uri: str
    # Empty: derived from the manifest (model and chunker), see IndexManifest.default_table_name.
    table_name: str | None = None
    s3_endpoint_url: str | None = None
    aws_region: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None

    def _connection(self) -> dict[str, str | None]:
        return {
            "endpoint_url": self.s3_endpoint_url,
            "region": self.aws_region,
            "aws_access_key_id": self.aws_access_key_id,
            "aws_secret_access_key": self.aws_secret_access_key,
        }

    def storage_options(self) -> dict[str, str]:
        return lance_storage_options(self.uri, **self._connection())

    def target_table(self, manifest: IndexManifest) -> str:
        return self.table_name or manifest.default_table_name()

    def open_for_write(self, manifest: IndexManifest) -> LanceVectorIndex:
        return LanceVectorIndex.open_or_create(
            self.uri, manifest, self.target_table(manifest), self.storage_options()
        )

    def open_for_read(self, manifest: IndexManifest) -> LanceVectorIndex:
        return LanceVectorIndex.open(
            self.uri,
            self.target_table(manifest),
            expected=manifest,
            storage_options=self.storage_options(),
        )

    def open_current(self, manifest: IndexManifest) -> LanceVectorIndex:
        table = self.aliases().current_table()
        if table is None:
            raise IndexNotFound(f"no index version is current at {self.uri}: run `lorechat ingest`")
        return LanceVectorIndex.open(
            self.uri, table, expected_embedder=manifest, storage_options=self.storage_options()
        )

    def open_version(self, table: str) -> LanceVectorIndex:
        return LanceVectorIndex.open(self.uri, table, storage_options=self.storage_options())

    def stored_manifest(self, configured: IndexManifest) -> tuple[str, IndexManifest]:
        name = self.target_table(configured)
        index = LanceVectorIndex.open(self.uri, name, storage_options=self.storage_options())
        return name, index.manifest

    def aliases(self) -> AliasStore:
        return AliasStore(object_store_at(self.uri, **self._connection()))

    def versions(self) -> list[str]:
        return LanceVectorIndex.table_names(self.uri, self.storage_options())

    def drop_version(self, table: str) -> None:
        LanceVectorIndex.drop(self.uri, table, self.storage_options())
