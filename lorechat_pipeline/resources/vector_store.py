"""Vector stores: LanceDB (embedded; a folder or s3:// URI), the default, and Upstash Vector."""

from abc import ABC, abstractmethod
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from lorechat_pipeline.core.aliases import AliasStore
from lorechat_pipeline.core.backends.upstash_client import (
    UpstashCredentials,
    UpstashVectorClient,
)
from lorechat_pipeline.core.backends.upstash_index import (
    UpstashVectorIndex,
    read_manifest,
    upstash_aliases,
)
from lorechat_pipeline.core.index_protocol import VectorIndex
from lorechat_pipeline.core.manifest import IndexManifest
from lorechat_pipeline.core.storage import object_store_at
from lorechat_pipeline.core.vector_index import (
    IndexNotFound,
    LanceVectorIndex,
    lance_storage_options,
)


class VectorStoreResource(dg.ConfigurableResource, ABC):
    @abstractmethod
    def open_for_write(self, manifest: IndexManifest) -> VectorIndex:
        """The version this configuration builds (created on first use)."""

    @abstractmethod
    def open_for_read(self, manifest: IndexManifest) -> VectorIndex:
        """The version this configuration builds, which must exist."""

    @abstractmethod
    def open_current(self, manifest: IndexManifest) -> VectorIndex:
        """The version the alias names (what searches read); the embedder must match."""

    @abstractmethod
    def open_version(self, table: str) -> VectorIndex:
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

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the versions live, for messages and status (never a secret)."""


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

    @property
    def location(self) -> str:
        return self.uri

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


class UpstashVectorStore(VectorStoreResource):
    """Upstash Vector: one namespace per index version in one Upstash index (a REST URL).

    `url` and `token` come as dg.EnvVar (UPSTASH_VECTOR_REST_URL, UPSTASH_VECTOR_REST_TOKEN),
    resolved at launch and hidden in the UI; or both from the Secrets Manager secret
    `secret_id` (LORECHAT_UPSTASH_SECRET_ID), read when the store is first used.
    """

    url: str | None = None
    token: str | None = None
    secret_id: str | None = None
    aws_region: str | None = None
    secrets_endpoint_url: str | None = None
    # Empty: the namespace is derived from the manifest, as LanceDB's table name is.
    table_name: str | None = None

    _client: Any = PrivateAttr(default=None)

    def client(self) -> UpstashVectorClient:
        if self._client is None:
            credentials = UpstashCredentials.resolve(
                url=self.url,
                token=self.token,
                secret_id=self.secret_id,
                env={},  # only this configuration: the environment was read by the settings
                region=self.aws_region,
                secrets_endpoint_url=self.secrets_endpoint_url,
            )
            self._client = UpstashVectorClient(credentials)
        client: UpstashVectorClient = self._client
        return client

    @property
    def location(self) -> str:
        return self.client().credentials.url

    def target_table(self, manifest: IndexManifest) -> str:
        return self.table_name or manifest.default_table_name()

    def open_for_write(self, manifest: IndexManifest) -> UpstashVectorIndex:
        return UpstashVectorIndex.open_or_create(
            self.client(), manifest, self.target_table(manifest)
        )

    def open_for_read(self, manifest: IndexManifest) -> UpstashVectorIndex:
        return UpstashVectorIndex.open(
            self.client(), self.target_table(manifest), expected=manifest
        )

    def open_current(self, manifest: IndexManifest) -> UpstashVectorIndex:
        table = self.aliases().current_table()
        if table is None:
            raise IndexNotFound(
                f"no index version is current at {self.location}: run `lorechat ingest`"
            )
        return UpstashVectorIndex.open(self.client(), table, expected_embedder=manifest)

    def open_version(self, table: str) -> UpstashVectorIndex:
        return UpstashVectorIndex.open(self.client(), table)

    def stored_manifest(self, configured: IndexManifest) -> tuple[str, IndexManifest]:
        name = self.target_table(configured)
        manifest = read_manifest(self.client(), name)
        if manifest is None:
            raise IndexNotFound(f"no index version {name!r} at {self.location}")
        return name, manifest

    def aliases(self) -> AliasStore:
        return upstash_aliases(self.client())

    def versions(self) -> list[str]:
        return UpstashVectorIndex.table_names(self.client())

    def drop_version(self, table: str) -> None:
        UpstashVectorIndex.drop(self.client(), table)
