import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from lorechat_pipeline.core.layout import ProcessedLayout
from lorechat_pipeline.core.ledger import CHUNKED, LedgerEntry
from lorechat_pipeline.core.records import CHUNK_SCHEMA, embedding_schema
from lorechat_pipeline.core.storage import ObjectStore
from lorechat_pipeline.core.tables import write_table
from lorechat_pipeline.runner import Pipeline
from lorechat_pipeline.settings import load_settings

PipelineFactory = Callable[..., Pipeline]


@pytest.fixture
def make_pipeline(tmp_path: Path, embedder: Any) -> Iterator[PipelineFactory]:
    """A pipeline on the local default under its own LORECHAT_HOME."""
    made: list[Pipeline] = []

    def factory(source: str | Path, home: Path | None = None, **overrides: Any) -> Pipeline:
        settings = load_settings(
            **{"home": home or tmp_path / "home", "parse_workers": 1, **overrides},
            source=str(source),
        )
        made.append(Pipeline.from_settings(settings))
        return made[-1]

    yield factory
    for pipeline in made:
        pipeline.close()


def write(folder: Path, relative: str, content: str | bytes) -> Path:
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def store_artifacts(
    processed: ObjectStore, layout: ProcessedLayout, rows: pa.Table
) -> dict[str, LedgerEntry]:
    """The chunk and embedding artifacts of index rows as the earlier stages store them, and
    the embedding ledger that names them (document_id → entry)."""
    ledger = {}
    dimension = rows.schema.field("vector").type.list_size
    for doc_id in dict.fromkeys(rows.column("document_id").to_pylist()):
        document = rows.filter(pa.compute.equal(rows["document_id"], doc_id))
        first = document.slice(0, 1).to_pylist()[0]
        shard, content_fp = first["shard"], first["content_fp"]
        chunks = document.select(CHUNK_SCHEMA.names).cast(CHUNK_SCHEMA)
        vectors = document.select(["chunk_id", "vector"]).cast(embedding_schema(dimension))
        write_table(processed, layout.chunks(shard, doc_id, content_fp), chunks)
        write_table(processed, layout.embeddings(shard, doc_id, content_fp), vectors)
        ledger[doc_id] = LedgerEntry(
            doc_id, first["document"], content_fp, CHUNKED, chunk_count=document.num_rows
        )
    return ledger


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def index_snapshot(pipeline: Pipeline) -> dict[str, tuple[str, str, tuple[float, ...]]]:
    """chunk id → (document, text, rounded vector): what "the same index" means."""
    index = pipeline.open_index()
    table = index.rows(None, ["chunk_id", "document", "text", "vector"])
    snapshot = {}
    for row in table.to_pylist():
        vector = tuple(np.round(np.asarray(row["vector"], dtype=np.float32), 5).tolist())
        snapshot[row["chunk_id"]] = (row["document"], row["text"], vector)
    assert len(snapshot) == table.num_rows, "duplicate chunk ids in the index"
    return snapshot


MARKDOWN = """# Solar panels

Solar panels convert sunlight into electricity using photovoltaic cells made of silicon.

## Maintenance

Clean the panels twice a year and check the inverter for warning lights.
"""

HTML = """<html><head><title>Tea</title></head><body>
<h1>Brewing green tea</h1>
<p>Green tea is best brewed at eighty degrees Celsius for two to three minutes.</p>
<h2>Storage</h2>
<p>Keep tea leaves in an airtight container away from light and moisture.</p>
</body></html>
"""

TEXT = """Bicycle repair notes

To fix a flat tyre, remove the wheel, take out the inner tube and find the puncture by
submerging the tube in water. Patch the hole, let the glue dry and reinflate the tyre.
"""


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "source"
    write(folder, "energy/solar.md", MARKDOWN)
    write(folder, "energy/solar.md.metadata.json", '{"metadataAttributes": {"team": "facilities"}}')
    write(folder, "kitchen/tea.html", HTML)
    write(folder, "bikes.txt", TEXT)
    return folder
