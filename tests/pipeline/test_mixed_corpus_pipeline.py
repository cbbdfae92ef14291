"""The reference set through the whole pipeline: every file ends indexed or quarantined.

Slow (it embeds a 3 MB novel and a 619-page PDF): `make test-slow`. The default run parses the same
files through the parser pool in test_mixed_corpus.py.
"""

import shutil
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA
from tests.pipeline.conftest import PipelineFactory

MIXED = SHARED_DATA / "mixed" / "docs"

pytestmark = [
    pytest.mark.slow,
    # It embeds ~10k chunks (a 3 MB novel, a 619-page PDF): far past the default 900 s limit.
    pytest.mark.timeout(5400),
    pytest.mark.shared_data,
    pytest.mark.skipif(not MIXED.is_dir(), reason=f"{MIXED} is absent (../shared/data)"),
]


def test_every_mixed_document_is_indexed_or_quarantined(
    tmp_path: Path, make_pipeline: PipelineFactory
) -> None:
    source = tmp_path / "mixed"
    shutil.copytree(MIXED, source)
    files = {p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file()}
    pipeline = make_pipeline(source, parse_workers=2)
    summary = pipeline.ingest()
    indexed = set(pipeline.open_index().rows(None, ["document"]).column("document").to_pylist())
    quarantined = {entry.document: entry for entry in pipeline.quarantine()}
    assert indexed | set(quarantined) == files
    assert not indexed & set(quarantined)
    assert all(entry.reason and entry.detail for entry in quarantined.values())
    assert summary.quarantined == len(quarantined)
    assert quarantined["password_protected.xlsx"].reason == "encrypted"
    assert "language-docs/eng_spa_mult.doc" in indexed
    assert pipeline.ingest().shards_run == []
