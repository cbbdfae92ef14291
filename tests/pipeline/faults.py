"""Fault injection for pipeline tests: an embedder whose k-th batch fails, a LanceDB table whose
k-th commit fails.

Everything else is real: the wrappers delegate to the configured embedder and to LanceDB. A
`Fault` counts calls across every embedder or index the resources hand out during a test (a
run asks for its embedder in several stages, and a retried step asks again), so "the k-th
batch fails" means the k-th batch of the whole test, whichever step or retry sends it.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pyarrow as pa

from lorechat_pipeline.core.embedding import Embedder
from lorechat_pipeline.core.ids import SHARD_COUNT, shard_of
from lorechat_pipeline.core.index_protocol import VectorIndex
from lorechat_pipeline.core.manifest import IndexManifest
from lorechat_pipeline.core.vector_index import LanceVectorIndex
from lorechat_pipeline.definitions import build_definitions
from lorechat_pipeline.resources.embedder import EmbedderResource
from lorechat_pipeline.resources.vector_store import LanceDBVectorStore
from lorechat_pipeline.runner import Pipeline
from lorechat_pipeline.settings import LorechatSettings
from tests.pipeline.conftest import write


class InjectedFault(RuntimeError):
    pass


@dataclass
class Fault:
    """Call number `first` (1-based) and the following ones fail, `times` failures in all
    (None: every call from `first` on, a persistent fault)."""

    name: str
    first: int = 1
    times: int | None = 1
    calls: int = 0
    failures: int = 0

    def hit(self) -> None:
        self.calls += 1
        if self.calls >= self.first and (self.times is None or self.failures < self.times):
            self.failures += 1
            raise InjectedFault(f"injected {self.name} failure on call {self.calls}")

    def clear(self) -> None:
        self.times = self.failures


# Resources are pydantic models that Dagster copies per run: they name their fault instead.
FAULTS: dict[str, Fault] = {}


def register(fault: Fault) -> Fault:
    FAULTS[fault.name] = fault
    return fault


class CrashingEmbedder(Embedder):
    """Delegates to the real model; `embed_documents` (one batch of a stage) fails as told."""

    def __init__(self, real: Embedder, fault: Fault) -> None:
        self.real = real
        self.fault = fault
        self.model_id = real.model_id
        self.dimension = real.dimension
        self.normalized = real.normalized
        self.metric = real.metric

    def warm_up_in_background(self) -> None:
        self.real.warm_up_in_background()

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.fault.hit()
        return self.real.embed_documents(texts)

    def embed_query(self, text: str) -> np.ndarray:
        return self.real.embed_query(text)

    def __getattr__(self, name: str) -> Any:  # count_tokens, warm_up_in_background, ...
        return getattr(self.real, name)


class CrashingEmbedderResource(EmbedderResource):
    """The configured embedder resource (`inner`), its batches failing as `fault` says."""

    inner: EmbedderResource
    fault: str

    def get_embedder(self) -> Embedder:
        return CrashingEmbedder(self.inner.get_embedder(), FAULTS[self.fault])

    def model_id(self) -> str:
        return self.inner.model_id()

    def model_version(self) -> str:
        return self.inner.model_version()


class FailingLanceTable:
    """The real LanceDB table; a commit (one merge-insert) fails as `fault` says, before
    anything of it reaches the table, as a refused commit would. Everything else is the table's."""

    def __init__(self, table: Any, fault: Fault) -> None:
        self.table = table
        self.fault = fault

    def merge_insert(self, on: str) -> Any:
        self.fault.hit()
        return self.table.merge_insert(on)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.table, name)


class FailingLanceDBVectorStore(LanceDBVectorStore):
    fault: str

    def open_for_write(self, manifest: IndexManifest) -> LanceVectorIndex:
        real = super().open_for_write(manifest)
        table = FailingLanceTable(real.table, FAULTS[self.fault])
        return LanceVectorIndex(table, real.manifest, real.uri)


def in_one_block(index: VectorIndex, *steps: Callable[[], object]) -> None:
    """The steps (writes, or the caller's own code between them) in one all_or_nothing block."""
    with index.all_or_nothing():
        for step in steps:
            step()


def writing(index: VectorIndex, write: tuple[pa.Table, Sequence[str]]) -> Callable[[], object]:
    return lambda: index.replace_documents(*write)


def give_up() -> None:
    """The caller's own code failing inside a block (an artifact missing, say)."""
    raise InjectedFault("the caller gives up between two writes")


def pipeline_with(settings: LorechatSettings, **resources: Any) -> Pipeline:
    """The pipeline of `settings` with some resources replaced (the same assets and jobs)."""
    definitions = build_definitions(settings)
    return Pipeline(
        settings,
        dg.Definitions(
            assets=list(definitions.assets or []),
            asset_checks=list(definitions.asset_checks or []),
            jobs=list(definitions.jobs or []),
            resources={**(definitions.resources or {}), **resources},
        ),
    )


def with_crashing_embedder(settings: LorechatSettings, fault: Fault) -> Pipeline:
    inner = build_definitions(settings).resources["embedder"]  # type: ignore[index]
    return pipeline_with(
        settings, embedder=CrashingEmbedderResource(inner=inner, fault=register(fault).name)
    )


def with_failing_lancedb(settings: LorechatSettings, fault: Fault) -> Pipeline:
    return pipeline_with(
        settings,
        vector_store=FailingLanceDBVectorStore(
            uri=settings.index_location, table_name=settings.index_table, fault=register(fault).name
        ),
    )


def keys_in_shards(prefix: str, count: int, shards: Sequence[int]) -> list[str]:
    """`count` source keys `{prefix}-NNN.md` that fall in the given shards (so a run touches
    only those shards: the rest of the 16 have nothing to do)."""
    wanted = {f"shard-{number:03d}" for number in shards}
    keys: list[str] = []
    number = 0
    while len(keys) < count:
        key = f"{prefix}-{number:04d}.md"
        if shard_of(key, SHARD_COUNT) in wanted:
            keys.append(key)
        number += 1
    return keys


def note(key: str, paragraphs: int = 6, version: int = 1) -> str:
    topic = sum(map(ord, key))  # not hash(): the text must be the same in every process
    body = "\n\n".join(
        f"Paragraph {p} of {key} (version {version}) is about topic {(topic + p) % 13}: "
        f"the {['red', 'green', 'blue', 'amber'][p % 4]} lantern stands by door number {p}."
        for p in range(paragraphs)
    )
    return f"# {key}\n\n{body}\n"


def write_notes(folder: Path, keys: Sequence[str], paragraphs: int = 6, version: int = 1) -> None:
    for key in keys:
        write(folder, key, note(key, paragraphs, version))
