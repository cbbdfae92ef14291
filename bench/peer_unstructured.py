"""unstructured-ingest 1.11.23 as a peer: local source → partition (fast) → chunk by_title →
huggingface embedder on the packaged model → LanceDB destination, with the workarounds it needs
to run here (bench.ingest_worker.PEER_WORKAROUNDS) applied by subclassing, not by editing it.

Import only in the peer's own worker process: it sets OMP_NUM_THREADS before torch loads.
"""

import os

# Before torch loads: the pipeline's forked workers hang in torch's thread pool otherwise.
os.environ["OMP_NUM_THREADS"] = "1"

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lancedb
import pandas as pd
import pyarrow as pa
from unstructured_ingest.interfaces import ProcessorConfig
from unstructured_ingest.pipeline.pipeline import Pipeline
from unstructured_ingest.processes.chunker import Chunker, ChunkerConfig
from unstructured_ingest.processes.connectors.lancedb.lancedb import RECORD_ID_LABEL
from unstructured_ingest.processes.connectors.lancedb.local import (
    LanceDBLocalConnectionConfig,
    LanceDBLocalUploader,
    LanceDBUploaderConfig,
    LanceDBUploadStager,
)
from unstructured_ingest.processes.connectors.local import (
    LocalConnectionConfig,
    LocalDownloader,
    LocalDownloaderConfig,
    LocalIndexer,
    LocalIndexerConfig,
)
from unstructured_ingest.processes.embedder import Embedder, EmbedderConfig
from unstructured_ingest.processes.partitioner import Partitioner, PartitionerConfig
from unstructured_ingest.utils.data_prep import get_json_data

from lorechat_pipeline.core.embedding import packaged_model_path
from lorechat_pipeline.core.parsing.offline_nlp import install_offline_nlp
from lorechat_pipeline.core.vector_index import sql_string

TABLE = "vectors"
PROCESSES = 2


class Stager(LanceDBUploadStager):
    """Reads the embedder's output as JSON or NDJSON (the original calls json.load on NDJSON)."""

    def run(self, elements_filepath: Path, file_data: Any, output_dir: Path, **kw: Any) -> Path:
        rows = [
            self.conform_dict(element_dict=element, file_data=file_data)
            for element in get_json_data(elements_filepath)
        ]
        output = (output_dir / kw["output_filename"]).with_suffix(".feather")
        pd.DataFrame(rows).to_feather(output)
        return output


_writer: dict[str, asyncio.Lock] = {}


class Uploader(LanceDBLocalUploader):
    """Declares itself async (the LanceDB upload exists only there), quotes the record id as a
    SQL string (the original's double quotes name a column) and writes one document at a time
    (concurrent writers fail)."""

    def is_async(self) -> bool:
        return True

    async def run_async(self, path: Path, file_data: Any, **kwargs: Any) -> None:
        lock = _writer.setdefault("lock", asyncio.Lock())
        frame = pd.read_feather(path)
        async with lock, self.get_table() as table:
            frame = self._fit_to_schema(frame, await table.schema())
            await table.delete(f"{RECORD_ID_LABEL} = {sql_string(file_data.identifier)}")
            await table.add(data=frame)


def build(
    source: Path, state: Path, chunking: dict[str, int]
) -> tuple[Callable[[], dict], Callable[[], dict]]:
    install_offline_nlp()  # before the pool forks: the workers inherit the hook
    uri = str(state / "lancedb")
    database = lancedb.connect(uri)
    if TABLE not in database.table_names():  # the destination must exist beforehand
        schema = pa.schema(
            [
                ("vector", pa.list_(pa.float32(), 384)),
                (RECORD_ID_LABEL, pa.string()),
                ("element_id", pa.string()),
                ("text", pa.string()),
                ("type", pa.string()),
            ]
        )
        database.create_table(TABLE, schema=schema)
    local = LocalConnectionConfig()
    pipeline = Pipeline(
        context=ProcessorConfig(
            num_processes=PROCESSES,
            work_dir=str(state / "work"),
            verbose=False,
            tqdm=False,
            raise_on_error=False,
        ),
        indexer=LocalIndexer(
            index_config=LocalIndexerConfig(input_path=str(source), recursive=True),
            connection_config=local,
        ),
        downloader=LocalDownloader(
            download_config=LocalDownloaderConfig(), connection_config=local
        ),
        partitioner=Partitioner(config=PartitionerConfig(strategy="fast")),
        chunker=Chunker(
            config=ChunkerConfig(
                chunking_strategy="by_title",
                chunk_max_characters=chunking["max"],
                chunk_new_after_n_chars=chunking["new_after"],
                chunk_combine_text_under_n_chars=chunking["combine_under"],
            )
        ),
        embedder=Embedder(
            config=EmbedderConfig(
                embedding_provider="huggingface", embedding_model_name=str(packaged_model_path())
            )
        ),
        stager=Stager(),
        uploader=Uploader(
            upload_config=LanceDBUploaderConfig(table_name=TABLE),
            connection_config=LanceDBLocalConnectionConfig(uri=uri),
        ),
    )

    def ingest() -> dict:
        pipeline.run()
        return {"processes": PROCESSES}

    def read_back() -> dict:
        table = lancedb.connect(uri).open_table(TABLE).to_arrow()
        return {
            "texts": table.column("text").to_pylist(),
            "documents": len(set(table.column(RECORD_ID_LABEL).to_pylist())),
        }

    return ingest, read_back
