"""Fuzz the parsing front door: arbitrary and mutated bytes under arbitrary extensions, through
the ParserPool the chunk stage uses. Whatever comes in, the outcome is chunks or DocumentRejected
(a quarantine with a known reason); nothing else escapes, and the pool keeps working.

Bounded: a few dozen examples by default; `make test-slow` runs more.
"""

import io
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lorechat_pipeline.core.parsing import (
    REASONS,
    ChunkingOptions,
    DocumentRejected,
    ParseLimits,
    ParserPool,
    detect_format,
)
from lorechat_pipeline.core.parsing.formats import EXTENSIONS

EXTENSION_CHOICES = [*sorted(EXTENSIONS), ".doc", ".xls", ".ppt", ".zip", ".png", ".bin", ""]
FUZZ_SETTINGS = {
    "deadline": None,
    "database": None,  # no .hypothesis folder in the repository
    "derandomize": True,  # the same examples on every run: a failure is reproducible
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


def _docx() -> bytes:
    import docx

    document = docx.Document()
    document.add_heading("Fuzzing", level=1)
    document.add_paragraph("A paragraph about harbour tides and ferries.")
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def _xlsx() -> bytes:
    import openpyxl

    workbook = openpyxl.Workbook()
    workbook.active.append(["tide", "height"])
    workbook.active.append(["noon", 4.2])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _pdf() -> bytes:
    import pikepdf

    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(612, 792))
    page = pdf.pages[0]
    font = pikepdf.Dictionary(Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1)
    font.BaseFont = pikepdf.Name.Helvetica
    page.Resources = pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font))
    page.Contents = pdf.make_stream(b"BT /F1 12 Tf 72 712 Td (High water at noon.) Tj ET")
    buffer = io.BytesIO()
    pdf.save(buffer)
    return buffer.getvalue()


SEEDS = {
    ".docx": _docx(),
    ".xlsx": _xlsx(),
    ".pdf": _pdf(),
    ".html": b"<html><body><h1>Tides</h1><p>High water at noon.</p></body></html>",
    ".md": b"# Tides\n\nHigh water at noon, low water at six.\n",
    ".csv": b"tide,height\nnoon,4.2\nsix,0.8\n",
    ".json": b'{"tide": "noon", "height": 4.2, "notes": ["ferry", "harbour"]}',
    ".eml": b"From: a@example.com\nSubject: Tides\n\nHigh water at noon.\n",
    ".rtf": b"{\\rtf1\\ansi{\\fonttbl\\f0 Helvetica;}\\f0 High water at noon.}",
    ".xml": b'<?xml version="1.0"?><tides><tide at="noon">4.2</tide></tides>',
}


@st.composite
def documents(draw: st.DrawFn) -> tuple[bytes, str]:
    """Raw bytes, or a valid seed document with bytes overwritten, inserted or cut off."""
    extension = draw(st.sampled_from(EXTENSION_CHOICES))
    if draw(st.booleans()):
        return draw(st.binary(max_size=4096)), extension
    seed_extension = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[seed_extension])
    for _ in range(draw(st.integers(0, 8))):
        position = draw(st.integers(0, len(data) - 1))
        data[position : position + 1] = draw(st.binary(min_size=0, max_size=16))
        if not data:
            break
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    # Mostly the seed's own extension (the parser goes deep), sometimes another one.
    chosen = draw(st.sampled_from([seed_extension, seed_extension, extension]))
    return bytes(data), chosen


@pytest.fixture(scope="module")
def pool() -> Iterator[ParserPool]:
    # Small limits, so that a mutated document that does unfold trips them quickly.
    limits = ParseLimits(max_inflated_bytes=64 * 1024 * 1024, max_characters=1_000_000)
    with ParserPool(ChunkingOptions(), workers=1, timeout_seconds=60, limits=limits) as pool:
        yield pool


def check_outcome(pool: ParserPool, document: tuple[bytes, str]) -> None:
    data, extension = document
    # As the chunk stage calls it: map() yields chunks or a DocumentRejected per document.
    [(_, outcome)] = list(pool.map([("document", data, f"fuzz{extension}")]))
    if isinstance(outcome, DocumentRejected):
        assert outcome.reason in REASONS
        assert outcome.detail
    else:
        assert outcome, "an empty chunk list instead of a rejection"
        assert all(chunk.text.strip() and "\x00" not in chunk.text for chunk in outcome)


@settings(max_examples=60, **FUZZ_SETTINGS)  # type: ignore[arg-type]
@given(document=documents())
def test_any_bytes_end_as_chunks_or_a_quarantine(
    pool: ParserPool, document: tuple[bytes, str]
) -> None:
    check_outcome(pool, document)


@pytest.mark.slow
@settings(max_examples=3000, **FUZZ_SETTINGS)  # type: ignore[arg-type]
@given(document=documents())
def test_any_bytes_end_as_chunks_or_a_quarantine_long(
    pool: ParserPool, document: tuple[bytes, str]
) -> None:
    check_outcome(pool, document)


@settings(max_examples=300, **FUZZ_SETTINGS)  # type: ignore[arg-type]
@given(document=documents())
def test_format_detection_only_ever_rejects(document: tuple[bytes, str]) -> None:
    """In process, so thousands of inputs are cheap: detection and the container limit raise
    nothing but DocumentRejected."""
    data, extension = document
    reason = None
    try:
        ParseLimits().check_container(data)
        detect_format(f"fuzz{extension}", data)
    except DocumentRejected as rejected:
        reason = rejected.reason
    assert reason is None or reason in REASONS
