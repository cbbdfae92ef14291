"""The interface the pipeline stages and the serving app use on a vector index version.

LanceVectorIndex (core/vector_index.py) and UpstashVectorIndex (core/backends/upstash_index.py)
both satisfy it, so either can stand behind the pipeline and serving. `where` arguments are
predicates in the small SQL dialect built with sql_string / sql_in / filter_sql; the Upstash
index translates them (core/backends/upstash_filters.py).
"""

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa

from lorechat_pipeline.core.manifest import IndexManifest
from lorechat_pipeline.core.vector_index import SearchHit, WriteResult

if TYPE_CHECKING:
    from lorechat_pipeline.core.backends.upstash_index import UpstashVectorIndex
    from lorechat_pipeline.core.vector_index import LanceVectorIndex


@runtime_checkable
class VectorIndex(Protocol):
    manifest: IndexManifest

    @property
    def name(self) -> str:
        """The version's name: a LanceDB table or an Upstash namespace (what the alias names)."""

    def refresh(self) -> None: ...

    def count(self, where: str | None = None) -> int: ...

    def rows(
        self, where: str | None, columns: Sequence[str], limit: int | None = None
    ) -> pa.Table: ...

    def document_versions(self, shard: str) -> dict[str, str]: ...

    def replace_documents(self, rows: pa.Table, document_ids: Sequence[str]) -> WriteResult: ...

    def all_or_nothing(self) -> AbstractContextManager[None]:
        """Several replace_documents calls as one write: when anything in the block raises, the
        index is put back as it was before the block (as far as the backend allows). A call
        outside any block is a block of its own."""
        ...

    def search(
        self, vector: np.ndarray, k: int = 10, where: str | None = None
    ) -> list[SearchHit]: ...

    def maintain(self, ann_index_min_rows: int, fold: bool = True) -> list[str]: ...

    def has_unfolded_rows(self) -> bool: ...


if TYPE_CHECKING:  # mypy checks that both backends satisfy the interface; nothing runs here

    def _both_backends(
        lance: "LanceVectorIndex", upstash: "UpstashVectorIndex"
    ) -> list[VectorIndex]:
        return [lance, upstash]
