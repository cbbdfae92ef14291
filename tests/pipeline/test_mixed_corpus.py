"""Every file of the shared mixed corpus through ParserPool: each ends indexed or rejected."""

import csv
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from lorechat_pipeline.core.parsing import ChunkingOptions, DocumentRejected, ParserPool

MIXED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mixed"
DOCS = MIXED / "docs"

pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.skipif(not DOCS.is_dir(), reason=f"shared mixed corpus not found at {MIXED}"),
]

# Generous, so the largest files (a 619-page PDF, War and Peace) are parsed, not timed out:
# ~110 s and ~45 s on 2 cores.
TIMEOUT_SECONDS = 300


def manifest_notes() -> dict[str, str]:
    with (MIXED / "MANIFEST.tsv").open(newline="", encoding="utf-8") as handle:
        return {row["path"]: row["note"] for row in csv.DictReader(handle, delimiter="\t")}


def largest_work_first(path: Path) -> float:
    # PDFs cost several times more per byte than text; starting them first keeps both workers busy.
    return -path.stat().st_size * (3 if path.suffix.lower() == ".pdf" else 1)


def test_every_file_is_indexed_or_rejected_with_a_reason() -> None:
    files = sorted((p for p in DOCS.rglob("*") if p.is_file()), key=largest_work_first)
    started: dict[str, float] = {}

    def jobs() -> Iterator[tuple[str, bytes, str]]:
        for path in files:
            key = path.relative_to(MIXED).as_posix()
            started[key] = time.monotonic()
            yield key, path.read_bytes(), path.name

    outcomes: dict[str, str] = {}
    texts: dict[str, str] = {}
    begin = time.monotonic()
    with ParserPool(ChunkingOptions(), workers=2, timeout_seconds=TIMEOUT_SECONDS) as pool:
        for key, outcome in pool.map(jobs()):
            seconds = time.monotonic() - started[key]
            if isinstance(outcome, DocumentRejected):
                assert outcome.reason
                assert outcome.detail
                outcomes[key] = outcome.reason
                print(f"{seconds:7.2f}s  {key:60s} {outcome}")
            else:
                assert outcome, f"{key}: an empty chunk list instead of a rejection"
                outcomes[key] = "indexed"
                texts[key] = "\n".join(chunk.text for chunk in outcome)
                print(f"{seconds:7.2f}s  {key:60s} indexed, {len(outcome)} chunks")
    print(f"total {time.monotonic() - begin:.1f}s: {sorted(Counter(outcomes.values()).items())}")

    assert set(outcomes) == {path.relative_to(MIXED).as_posix() for path in files}
    assert not {
        key: reason
        for key, reason in outcomes.items()
        if reason in ("parser_crashed", "timeout", "memory_exceeded")
    }

    notes = manifest_notes()
    for key, note in notes.items():
        if "password-protected" in note or note.startswith("PGP") or "marked encrypted" in note:
            assert outcomes[key] == "encrypted", key
        if note.startswith(("audio", "archive")) or "/img/" in key or "(OCR)" in note:
            assert outcomes[key] == "unsupported_type", key
        if "image-only PDF" in note:
            assert outcomes[key] == "no_text", key
        if "UTF-16" in note:
            assert outcomes[key] == "indexed", key
            assert sum(c.isascii() and c.isalpha() for c in texts[key]) > 20, key
            assert "\x00" not in texts[key]
        if "large" in note:
            assert outcomes[key] == "indexed", key

    assert outcomes["docs/password_protected.xlsx"] == "encrypted"
    assert outcomes["docs/empty.xlsx"] == "empty"
    assert outcomes["docs/language-docs/eng_spa_mult.doc"] == "indexed"  # really a DOCX
    assert "All human beings are born free" in texts["docs/language-docs/eng_spa_mult.doc"]
    for legacy in (
        "docs/duplicate-paragraphs.doc",
        "docs/fake-power-point.ppt",
        "docs/tests-example.xls",
    ):
        assert outcomes[legacy] == "unsupported_type"
    for media in ("docs/CantinaBand3.wav", "docs/simple.zip", "docs/img/DA-1p.png"):
        assert outcomes[media] == "unsupported_type"
    assert "Doylestown, PA 18901" in texts["docs/fake-text-utf-16-be.txt"]
    assert "Maple Leafs" in texts["docs/stanley-cups-utf-16.csv"]
    assert "très chaud" in texts["docs/fake-html-cp1252.html"]
    assert "Genoa and Lucca" in texts["docs/book-war-and-peace-1225p.txt"]

    # Every supported format in the corpus was indexed at least once.
    indexed_suffixes = {Path(key).suffix for key, reason in outcomes.items() if reason == "indexed"}
    expected = {".pdf", ".html", ".htm", ".md", ".txt", ".docx", ".pptx", ".xlsx", ".csv", ".tsv"}
    expected |= {
        ".eml",
        ".msg",
        ".rst",
        ".org",
        ".odt",
        ".rtf",
        ".epub",
        ".json",
        ".ndjson",
        ".xml",
    }
    assert expected <= indexed_suffixes
