"""The indexing stage carries the chunks Upstash cannot hold into its report (the vector_index
asset shows and logs them): the rest of the batch is written."""

import json
from pathlib import Path

import pyarrow as pa

from lorechat_pipeline.core.backends.upstash_client import UpstashVectorClient
from lorechat_pipeline.core.backends.upstash_index import UpstashVectorIndex
from lorechat_pipeline.core.layout import ProcessedLayout
from lorechat_pipeline.core.ledger import CHUNKED, LedgerEntry
from lorechat_pipeline.core.records import CHUNK_SCHEMA, embedding_schema
from lorechat_pipeline.core.stages.indexing import index_shard
from lorechat_pipeline.core.storage import LocalObjectStore
from lorechat_pipeline.core.tables import write_table
from tests.backends.conftest import DIMENSION, chunk_rows, make_manifest, unit_vectors


def test_index_shard_reports_quarantined_chunks(
    tmp_path: Path, client: UpstashVectorClient
) -> None:
    manifest = make_manifest()
    layout = ProcessedLayout(chunker_version=manifest.chunker_version, embedder_version="emb-1")
    processed = LocalObjectStore(tmp_path / "processed")
    shard = "shard-000"
    ledger = {}
    huge = json.dumps({"notes": "x" * 60_000})  # sidecar metadata past Upstash's 48 KiB
    for seed, (doc, metadata) in enumerate((("docA", huge), ("docB", None))):
        rows = chunk_rows(doc, [f"{doc} one", f"{doc} two"], unit_vectors(2, seed=seed))
        for row in rows:
            row["user_metadata"] = metadata
        chunks = pa.Table.from_pylist(
            [{name: row[name] for name in CHUNK_SCHEMA.names} for row in rows], schema=CHUNK_SCHEMA
        )
        vectors = pa.Table.from_pylist(
            [{"chunk_id": row["chunk_id"], "vector": row["vector"]} for row in rows],
            schema=embedding_schema(DIMENSION),
        )
        write_table(processed, layout.chunks(shard, doc, "fp-1"), chunks)
        write_table(processed, layout.embeddings(shard, doc, "fp-1"), vectors)
        ledger[doc] = LedgerEntry(doc, rows[0]["document"], "fp-1", CHUNKED, chunk_count=2)

    index = UpstashVectorIndex.open_or_create(client, manifest)
    report = index_shard(processed, index, shard, embedding_ledger=ledger, layout=layout)
    assert report.rows_written == 2
    assert [q.document_id for q in report.quarantined] == ["docA", "docA"]
    assert all(q.reason.startswith("metadata is ") for q in report.quarantined)
    assert index.document_versions(shard) == {"docB": "fp-1"}
