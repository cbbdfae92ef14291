"""Parity: the same chunks, embedded by the real packaged model, written to LanceDB (the local
default) and to the Upstash contract server through the same interface, answer the same queries
with the same top-k chunk ids and the same cosine scores — with and without filters."""

from pathlib import Path
from typing import Any

import pytest

from lorechat_pipeline.core.backends.upstash_client import UpstashCredentials, UpstashVectorClient
from lorechat_pipeline.core.backends.upstash_index import UpstashVectorIndex
from lorechat_pipeline.core.index_protocol import VectorIndex
from lorechat_pipeline.core.manifest import IndexManifest
from lorechat_pipeline.core.vector_index import LanceVectorIndex, sql_string
from serving.search import filter_sql
from tests.backends.conftest import TOKEN, chunk_rows, fast_backoff, table
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
