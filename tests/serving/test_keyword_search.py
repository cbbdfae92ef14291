"""Keyword search as the served index runs it: English stemming and stop words."""

from pathlib import Path

from lorechat_pipeline.core.ids import document_id
from lorechat_pipeline.core.vector_index import LanceVectorIndex
from serving.search import keyword
from tests.pipeline.test_vector_index import MANIFEST, rows


def test_a_stemmed_query_finds_the_inflected_word(tmp_path: Path) -> None:
    index = LanceVectorIndex.open_or_create(str(tmp_path), MANIFEST)
    texts = ["The mice were running in circles", "A quiet afternoon"]
    index.replace_documents(rows("a.md", texts), [document_id("a.md")])
    index.maintain(ann_index_min_rows=1_000_000)
    assert [hit.row["text"] for hit in keyword(index, "runs", 5, None)] == [texts[0]]
    assert keyword(index, "the were", 5, None) == []  # stop words alone match nothing
