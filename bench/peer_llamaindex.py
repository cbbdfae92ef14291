"""LlamaIndex IngestionPipeline as a peer: SimpleDirectoryReader → SentenceSplitter →
HuggingFaceEmbedding on the packaged model → LanceDB vector store, with a docstore (upserts) so
re-runs skip unchanged documents; with the workarounds it needs here
(bench.ingest_worker.PEER_WORKAROUNDS) applied by subclassing or configuration.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lancedb
from llama_index.core import SimpleDirectoryReader
from llama_index.core.ingestion import DocstoreStrategy, IngestionPipeline
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.storage.docstore import SimpleDocumentStore
from llama_index.embeddings.huggingface import HuggingFaceEmbedding
from llama_index.vector_stores.lancedb import LanceDBVectorStore
from transformers import AutoTokenizer

from lorechat_pipeline.core.embedding import packaged_model_path
from lorechat_pipeline.core.vector_index import sql_string

TABLE = "vectors"


class VectorStore(LanceDBVectorStore):
    """Quotes the doc id as a SQL string (the original's double quotes name a column, so a
    changed document crashes the re-run)."""

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        table = self.table
        assert table is not None
        table.delete(f"{self.doc_id_key} = {sql_string(ref_doc_id)}")


def build(
    source: Path, state: Path, chunk_tokens: int
) -> tuple[Callable[[], dict], Callable[[], dict]]:
    model = str(packaged_model_path())
    tokenizer = AutoTokenizer.from_pretrained(model)
    uri = str(state / "lancedb")
    embedding = HuggingFaceEmbedding(model_name=model, device="cpu")
    pipeline = IngestionPipeline(
        transformations=[
            # The model's own tokenizer: the default (tiktoken) downloads its vocabulary.
            SentenceSplitter(
                chunk_size=chunk_tokens,
                chunk_overlap=0,
                tokenizer=lambda text: tokenizer.encode(text, add_special_tokens=False),
            ),
            embedding,
        ],
        vector_store=VectorStore(uri=uri, table_name=TABLE, mode="create"),  # type: ignore[call-arg]
        docstore=SimpleDocumentStore(),
        docstore_strategy=DocstoreStrategy.UPSERTS,
    )
    persisted = state / "pipeline"
    if persisted.exists():
        pipeline.load(str(persisted))

    def ingest() -> dict:
        reader = SimpleDirectoryReader(str(source), recursive=True, filename_as_id=True)
        nodes = pipeline.run(documents=reader.load_data())
        pipeline.persist(str(persisted))
        return {"nodes_written": len(nodes), "embed_batch_size": embedding.embed_batch_size}

    def read_back() -> dict:
        table = lancedb.connect(uri).open_table(TABLE).to_arrow()
        return {
            "texts": table.column("text").to_pylist(),
            "documents": len(set(table.column("doc_id").to_pylist())),
        }

    return ingest, read_back
