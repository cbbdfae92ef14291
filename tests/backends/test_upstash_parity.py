"""Parity: the same chunks, embedded by the real packaged model, written to LanceDB (the local
default) and to the Upstash contract server through the same interface, answer the same queries
with the same top-k chunk ids and the same cosine scores — with and without filters."""

import dataclasses
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from lorechat_pipeline.core.backends.upstash_client import UpstashCredentials, UpstashVectorClient
from lorechat_pipeline.core.backends.upstash_index import UpstashVectorIndex
from lorechat_pipeline.core.index_protocol import VectorIndex
from lorechat_pipeline.core.layout import ProcessedLayout
from lorechat_pipeline.core.ledger import CHUNKED, LedgerEntry
from lorechat_pipeline.core.manifest import IndexManifest
from lorechat_pipeline.core.records import CHUNK_SCHEMA, embedding_schema
from lorechat_pipeline.core.stages.indexing import index_shard
from lorechat_pipeline.core.storage import LocalObjectStore
from lorechat_pipeline.core.tables import write_table
from lorechat_pipeline.core.vector_index import LanceVectorIndex, sql_string
from lorechat_pipeline.core.verification import verify_shard
from serving.search import filter_sql
from tests.backends.conftest import (
    DIMENSION,
    TOKEN,
    chunk_rows,
    fast_backoff,
    make_manifest,
    table,
    unit_vectors,
)
from tests.backends.upstash_contract_server import upstash_contract_server

DOCUMENTS = {
    "tea": [
        "Green tea is best brewed at eighty degrees Celsius for two to three minutes.",
        "Keep tea leaves in an airtight container away from light and moisture.",
        "Black tea tolerates boiling water and a longer steep of four to five minutes.",
    ],
    "bikes": [
        "To fix a flat tyre, remove the wheel and take out the inner tube.",
        "Find the puncture by submerging the tube in water and watching for bubbles.",
        "Patch the hole, let the glue dry and reinflate the tyre to the printed pressure.",
        "Lubricate the chain every few hundred kilometres, more often in the rain.",
    ],
    "solar": [
        "Solar panels convert sunlight into electricity using photovoltaic cells.",
        "Clean the panels twice a year and check the inverter for warning lights.",
        "Panels facing south at a tilt near the latitude collect the most energy.",
    ],
    "bread": [
        "Sourdough needs an active starter fed the night before baking.",
        "Knead the dough until it passes the windowpane test, then let it rise.",
        "Bake at a high temperature with steam for the first twenty minutes.",
    ],
}
QUERIES = [
    "how hot should the water be for green tea",
    "repairing a punctured bicycle tube",
    "maintenance of photovoltaic panels",
    "how to bake bread with a starter",
    "storing tea",
    "what to do when it rains",
]


def test_lancedb_and_upstash_return_the_same_top_k(tmp_path: Path, embedder: Any) -> None:
    manifest = IndexManifest(
        embedding_model=embedder.model_id,
        embedding_dimension=embedder.dimension,
        metric=embedder.metric,
        normalized=embedder.normalized,
        chunker_version="parity",
        chunker_description="parity test",
    )
    rows: list[dict[str, Any]] = []
    for number, (doc, texts) in enumerate(DOCUMENTS.items()):
        rows += chunk_rows(
            doc,
            texts,
            embedder.embed_documents(texts),
            shard=f"shard-00{number % 2}",
            collection="kitchen" if doc in ("tea", "bread") else "garage",
            embedding_model=embedder.model_id,
        )
    rows_table = table(rows, dimension=embedder.dimension)
    queries = embedder.embed_documents(QUERIES)

    lance = LanceVectorIndex.open_or_create(str(tmp_path / "index"), manifest)
    with (
        upstash_contract_server(token=TOKEN, dimension=embedder.dimension) as server,
        UpstashVectorClient(UpstashCredentials(server.url, TOKEN), backoff=fast_backoff()) as c,
    ):
        upstash = UpstashVectorIndex.open_or_create(c, manifest)
        indexes: list[VectorIndex] = [lance, upstash]
        for index in indexes:
            result = index.replace_documents(rows_table, list(DOCUMENTS))
            assert result.written == len(rows)
        assert lance.name == upstash.name  # one naming scheme for versions on both backends

        for where in (
            None,
            f"shard = {sql_string('shard-001')}",
            filter_sql({"page_number": {"gte": 2}}, ["kitchen"]),
        ):
            assert lance.count(where) == upstash.count(where)
            for vector in queries:
                expected = lance.search(vector, k=5, where=where)
                got = upstash.search(vector, k=5, where=where)
                assert [h.chunk_id for h in got] == [h.chunk_id for h in expected], where
                assert [h.score for h in got] == pytest.approx(
                    [h.score for h in expected], abs=1e-4
                )
                assert [h.text for h in got] == [h.text for h in expected]

        for shard in ("shard-000", "shard-001"):
            assert lance.document_versions(shard) == upstash.document_versions(shard)
        columns = ["chunk_id", "document", "ordinal", "page_number", "section", "element_types"]
        lance_rows = sorted(lance.rows(None, columns).to_pylist(), key=lambda r: r["chunk_id"])
        upstash_rows = sorted(upstash.rows(None, columns).to_pylist(), key=lambda r: r["chunk_id"])
        assert lance_rows == upstash_rows

        # A document change and a removal, through both: the same state afterwards.
        changed = chunk_rows(
            "tea",
            DOCUMENTS["tea"][:1],
            embedder.embed_documents(DOCUMENTS["tea"][:1]),
            content_fp="fp-2",
            collection="kitchen",
            embedding_model=embedder.model_id,
        )
        for index in indexes:
            index.replace_documents(table(changed, embedder.dimension), ["tea", "bread"])
        assert lance.count() == upstash.count() == len(rows) - 2 - 3
        for vector in queries:
            assert [h.chunk_id for h in upstash.search(vector, k=4)] == [
                h.chunk_id for h in lance.search(vector, k=4)
            ]


def test_the_indexing_stage_keeps_both_backends_in_step(tmp_path: Path) -> None:
    """The pipeline's own indexing stage (index_shard) and verification, unchanged, on LanceDB
    and on Upstash: the same artifacts give the same rows, through a change and a removal."""
    dimension = DIMENSION
    manifest = make_manifest(dimension)
    layout = ProcessedLayout(chunker_version=manifest.chunker_version, embedder_version="emb-1")
    processed = LocalObjectStore(tmp_path / "processed")
    shard = "shard-000"

    def artifacts(doc: str, texts: list[str], content_fp: str, seed: int) -> LedgerEntry:
        rows = chunk_rows(doc, texts, unit_vectors(len(texts), seed=seed), content_fp=content_fp)
        chunks = pa.Table.from_pylist(
            [{name: row[name] for name in CHUNK_SCHEMA.names} for row in rows], schema=CHUNK_SCHEMA
        )
        vectors = pa.Table.from_pylist(
            [{"chunk_id": row["chunk_id"], "vector": row["vector"]} for row in rows],
            schema=embedding_schema(dimension),
        )
        write_table(processed, layout.chunks(shard, doc, content_fp), chunks)
        write_table(processed, layout.embeddings(shard, doc, content_fp), vectors)
        return LedgerEntry(doc, rows[0]["document"], content_fp, CHUNKED, chunk_count=len(rows))

    ledger = {
        "docA": artifacts("docA", ["a0", "a1", "a2"], "fp-1", 1),
        "docB": artifacts("docB", ["b0", "b1"], "fp-1", 2),
        "docC": artifacts("docC", ["c0"], "fp-1", 3),
    }
    lance = LanceVectorIndex.open_or_create(str(tmp_path / "index"), manifest)
    with (
        upstash_contract_server(token=TOKEN, dimension=dimension) as server,
        UpstashVectorClient(UpstashCredentials(server.url, TOKEN), backoff=fast_backoff()) as c,
    ):
        upstash = UpstashVectorIndex.open_or_create(c, manifest)
        for step in ("first ingest", "docA changed, docC removed"):
            if step != "first ingest":
                ledger["docA"] = artifacts("docA", ["a0", "a1 edited"], "fp-2", 4)
                del ledger["docC"]
            lance_report, upstash_report = (
                index_shard(processed, index, shard, embedding_ledger=ledger, layout=layout)
                for index in (lance, upstash)
            )
            # LanceDB counts a chunk re-written under the same id as updated; Upstash deletes the
            # document's prefix first, so it counts it as deleted too. All else agrees.
            assert upstash_report.rows_deleted >= lance_report.rows_deleted
            same = dataclasses.replace(upstash_report, rows_deleted=lance_report.rows_deleted)
            assert same == lance_report, step
            for index in (lance, upstash):
                verification = verify_shard(index, shard, ledger)
                assert verification.passed, (step, index.name, verification)
            columns = ["chunk_id", "document_id", "content_fp", "text", "ordinal"]
            assert sorted(upstash.rows(None, columns).to_pylist(), key=str) == sorted(
                lance.rows(None, columns).to_pylist(), key=str
            )
        assert upstash.document_versions(shard) == {"docA": "fp-2", "docB": "fp-1"}
