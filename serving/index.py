"""The index as the serving container sees it: whatever version the alias names, opened through
its manifest, and refused when the query embedder is not the one that built it. On LanceDB (a
folder or s3://) or on Upstash Vector (a namespace per version), as LORECHAT_VECTOR_STORE says."""

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lorechat_pipeline.core.aliases import AliasStore
from lorechat_pipeline.core.backends.upstash_client import (
    UpstashCredentials,
    UpstashVectorClient,
)
from lorechat_pipeline.core.backends.upstash_index import UpstashVectorIndex, upstash_aliases
from lorechat_pipeline.core.deployment import VectorStoreKind
from lorechat_pipeline.core.embedding import Embedder
from lorechat_pipeline.core.index_protocol import VectorIndex
from lorechat_pipeline.core.manifest import IndexManifest, ManifestMismatch
from lorechat_pipeline.core.storage import object_store_at
from lorechat_pipeline.core.vector_index import (
    IndexNotFound,
    LanceVectorIndex,
    lance_storage_options,
)
from serving.resident import ResidentIndex, ResidentVectors
from serving.settings import ServingSettings

logger = logging.getLogger(__name__)


class IndexUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class ServedVersion:
    index: VectorIndex
    table: str
    opened_at: float


class IndexReader:
    """Follows the alias: a promotion is served within `alias_check_seconds`, with no restart.

    A promoted version built with another embedding model cannot be queried with this
    container's embedder; the reader keeps serving the version it has and reports itself not
    ready, so a deployment replaces it with a container configured for the new model.
    """

    def __init__(
        self, settings: ServingSettings, embedder: Embedder, result_columns: Sequence[str] = ()
    ) -> None:
        self.settings = settings
        self.embedder = embedder
        self.client: UpstashVectorClient | None = None
        # Upstash is searched where it lives; a LanceDB version is also copied into memory.
        self.resident = ResidentIndex(
            settings.resident_vectors_mb * 2**20
            if settings.backends.vector_store is not VectorStoreKind.UPSTASH
            else 0,
            result_columns,
        )
        self.uri: str
        self.aliases: AliasStore
        self._open_version: Callable[[str], VectorIndex]
        if settings.backends.vector_store is VectorStoreKind.UPSTASH:
            self._connect_upstash(settings)
        else:
            self._connect_lancedb(settings)
        # The query embedder's side of the manifest: what an index must have been built with.
        self.embedder_manifest = IndexManifest(
            embedding_model=embedder.model_id,
            embedding_dimension=embedder.dimension,
            metric=embedder.metric,
            normalized=embedder.normalized,
            chunker_version="",
            chunker_description="",
        )
        self._lock = threading.Lock()
        self._served: ServedVersion | None = None
        # A promoted version, opened and checked, waiting for its in-memory copy.
        self._incoming: ServedVersion | None = None
        self._checked_at = 0.0
        self.problem: str | None = None  # why the alias target is not served, if it is not

    @property
    def expected_model(self) -> str:
        return self.embedder.model_id

    def _connect_lancedb(self, settings: ServingSettings) -> None:
        self.uri = settings.index_location
        self.aliases = AliasStore(
            object_store_at(
                self.uri, endpoint_url=settings.s3_endpoint_url, region=settings.aws_region
            )
        )
        storage_options = lance_storage_options(
            self.uri, endpoint_url=settings.s3_endpoint_url, region=settings.aws_region
        )
        self._open_version = lambda table: LanceVectorIndex.open(
            self.uri,
            table,
            expected_embedder=self.embedder_manifest,
            storage_options=storage_options,
        )

    def _connect_upstash(self, settings: ServingSettings) -> None:
        token = settings.upstash_vector_rest_token
        credentials = UpstashCredentials.resolve(
            url=settings.upstash_vector_rest_url,
            token=token.get_secret_value() if token else None,
            secret_id=settings.upstash_secret_id,
            env={},  # the settings read the environment
            region=settings.aws_region,
            secrets_endpoint_url=settings.secrets_endpoint_url,
        )
        client = UpstashVectorClient(credentials)
        self.client = client
        self.uri = credentials.url
        self.aliases = upstash_aliases(client)
        self._open_version = lambda table: UpstashVectorIndex.open(
            client, table, expected_embedder=self.embedder_manifest
        )

    def close(self) -> None:
        self.resident.close()
        if self.client is not None:
            self.client.close()

    def resident_copy(self, served: ServedVersion) -> ResidentVectors | None:
        """The in-memory copy of the served version, if it is built and up to date."""
        return self.resident.copy_of(served.table)

    def _warm(self, incoming: ServedVersion) -> bool:
        """Whether a promoted version may be served: once its in-memory copy is built (or will
        not be: Upstash, over the budget, failed), or after `switch_warm_up_seconds` at most.
        Until then the previous version answers from its copy, so a promotion sends no search
        to a cold table, and the new table's caches never fill with what the copy holds.
        (No copy is ever built for Upstash or with no budget: never `building`.)"""
        if not self.resident.building(incoming.table):
            return True
        return time.monotonic() - incoming.opened_at >= self.settings.switch_warm_up_seconds

    def _switch_if_warm(self) -> ServedVersion | None:
        if self._incoming is None:  # every search asks: no lock unless a promotion is pending
            return None
        with self._lock:
            incoming = self._incoming
            if incoming is None or not self._warm(incoming):
                return None
            self._served, self._incoming, self.problem = incoming, None, None
        logger.info("now serving index version %s", incoming.table)
        return incoming

    def _track(self, served: ServedVersion) -> None:
        if isinstance(served.index, LanceVectorIndex):
            self.resident.track(served.index)

    def _open(self, table: str) -> VectorIndex:
        return self._open_version(table)

    def open_initial(self) -> ServedVersion:
        """At start-up: the alias target, which must match the embedder (else refuse to start)."""
        table = self.aliases.current_table()
        if table is None:
            raise IndexNotFound(f"no index version is current at {self.uri}: ingest first")
        served = ServedVersion(self._open(table), table, time.monotonic())
        with self._lock:
            self._served, self._checked_at, self.problem = served, time.monotonic(), None
        self._track(served)
        return served

    def current_if_checked(self) -> ServedVersion | None:
        """The version to serve when knowing it needs no I/O (the alias was read within
        `alias_check_seconds`), else None: then `current()` reads the alias, in a thread."""
        switched = self._switch_if_warm()
        if switched is not None:
            return switched
        with self._lock:
            served, due = self._served, self._checked_at + self.settings.alias_check_seconds
            return served if served is not None and time.monotonic() < due else None

    def current(self) -> ServedVersion:
        checked = self.current_if_checked()
        if checked is not None:
            return checked
        with self._lock:
            served, due = self._served, self._checked_at + self.settings.alias_check_seconds
            if served is not None and time.monotonic() < due:
                return served  # another thread read the alias meanwhile
            self._checked_at = time.monotonic()
        try:
            table = self.aliases.current_table()
        except Exception as error:  # a flaky store must not stop search: keep the version we have
            logger.warning("could not read the index alias: %s", error)
            table = served.table if served else None
        if served is not None and table == served.table:
            with self._lock:
                self._incoming = None  # promoted and rolled back before it was warm
            served.index.refresh()  # rows written since (incremental updates) become visible
            self._track(served)
            return served
        if table is None:
            raise IndexUnavailable(f"no index version is current at {self.uri}")
        incoming = self._incoming
        if incoming is None or incoming.table != table:
            try:
                incoming = ServedVersion(self._open(table), table, time.monotonic())
            except (ManifestMismatch, IndexNotFound) as error:
                self.problem = str(error)
                logger.error("not switching to %s: %s", table, error)
                if served is None:
                    raise IndexUnavailable(str(error)) from error
                return served
            self._track(incoming)
            with self._lock:
                self._incoming = incoming
        if served is None:  # nothing to serve meanwhile
            with self._lock:
                self._served, self._incoming, self.problem = incoming, None, None
            return incoming
        return self._switch_if_warm() or served
