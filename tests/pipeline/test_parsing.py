"""parse_and_chunk on small real documents of every supported kind, and on the ones we reject."""

import codecs
import dataclasses
import io
import pickle
from pathlib import Path
from typing import Any

import pytest

from lorechat_pipeline.core.parsing import (
    PARSER_VERSION,
    ChunkingOptions,
    DocumentRejected,
    ParsedChunk,
    content_type_for,
    detect_format,
    is_supported,
    parse_and_chunk,
)
from lorechat_pipeline.core.parsing.cleaning import clean_text
from lorechat_pipeline.core.parsing.encoding import decode_text
from tests.pipeline import sample_documents as docs

OPTIONS = ChunkingOptions()


def parse(
    data: bytes | str, filename: str, options: ChunkingOptions = OPTIONS
) -> list[ParsedChunk]:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    chunks = parse_and_chunk(raw, filename, options)
    assert chunks, "a parsed document has at least one chunk"
    assert [chunk.ordinal for chunk in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.text == chunk.text.strip()
        assert "\x00" not in chunk.text
        assert len(chunk.text) <= options.max_characters
        assert chunk.element_types == tuple(sorted(set(chunk.element_types)))
    return chunks


def rejection(data: bytes, filename: str) -> DocumentRejected:
    with pytest.raises(DocumentRejected) as caught:
        parse_and_chunk(data, filename, OPTIONS)
    return caught.value


def chunk_with(chunks: list[ParsedChunk], needle: str) -> ParsedChunk:
    matches = [chunk for chunk in chunks if needle in chunk.text]
    assert matches, f"{needle!r} not in {[chunk.text for chunk in chunks]}"
    return matches[0]


# --- text formats --------------------------------------------------------------------------------


def test_markdown_sections_carry_their_heading() -> None:
    chunks = parse(docs.MARKDOWN, "guide.md", ChunkingOptions(combine_text_under_n_chars=0))
    config = chunk_with(chunks, "tide tables before the first voyage")
    assert config.title == "Configuration"
    assert "Title" in config.element_types
    assert "NarrativeText" in config.element_types
    assert chunk_with(chunks, "lighthouse keeper's files").title == "Installation Guide"
    assert all(chunk.page_number is None and chunk.section is None for chunk in chunks)


def test_html_headings_and_paragraphs() -> None:
    chunks = parse(docs.HTML, "notes.html", ChunkingOptions(combine_text_under_n_chars=0))
    assert chunk_with(chunks, "forty minutes after the southern pier").title == "Tide Tables"
    assert chunk_with(chunks, "pontoon beside the fish market").title == "Moorings"


def test_plain_text() -> None:
    chunks = parse(docs.TEXT, "maintenance.txt")
    text = " ".join(chunk.text for chunk in chunks)
    assert "lamp is cleaned every Tuesday" in text
    assert "oak cabinet" in text
    assert chunks[0].title == "Lighthouse Maintenance"


def test_csv_and_tsv_become_tables() -> None:
    for filename, data in (
        ("harbours.csv", docs.CSV),
        ("harbours.tsv", docs.CSV.replace(",", "\t")),
    ):
        chunks = parse(data, filename)
        assert chunks[0].element_types == ("Table",)
        assert "Concarneau" in chunks[0].text
        assert "14.5" in chunks[0].text


def test_json_and_ndjson_records() -> None:
    chunks = parse(docs.JSON, "vessels.json")
    assert "Marie-Louise" in chunks[0].text
    assert "Saint-Guénolé" in chunks[0].text
    ndjson = "\n".join(['{"vessel": "Ar Men"}', '{"vessel": "Enez Sun"}'])
    assert "Enez Sun" in " ".join(chunk.text for chunk in parse(ndjson, "vessels.ndjson"))


def test_xml_text_content() -> None:
    text = " ".join(chunk.text for chunk in parse(docs.XML, "harbours.xml"))
    assert "Deep water naval harbour" in text
    assert "Roscoff" in text


def test_xml_in_latin1_is_decoded_once() -> None:
    xml = docs.XML.replace("UTF-8", "ISO-8859-1").replace("Roscoff", "Locmariaquér")
    text = " ".join(chunk.text for chunk in parse(xml.encode("latin-1"), "harbours.xml"))
    assert "Locmariaquér" in text


def test_email_body_with_subject_as_section() -> None:
    chunks = parse(docs.EMAIL, "warning.eml")
    assert "secured with double lines" in chunks[0].text
    assert {chunk.section for chunk in chunks} == {"Storm warning for Friday"}


def test_pgp_encrypted_email_is_rejected_as_encrypted() -> None:
    assert rejection(docs.PGP_EMAIL.encode(), "secret.eml").reason == "encrypted"


def test_rst_sections() -> None:
    chunks = parse(docs.RST, "registry.rst", ChunkingOptions(combine_text_under_n_chars=0))
    assert chunk_with(chunks, "dry dock at Lorient").title == "Inspections"


# --- office formats and pdf ----------------------------------------------------------------------


def test_docx_headings() -> None:
    chunks = parse(docs.docx(), "safety.docx", ChunkingOptions(combine_text_under_n_chars=0))
    assert chunk_with(chunks, "Life jackets are stored").title == "Safety Procedures"
    assert chunk_with(chunks, "first Monday of each month").title == "Fire Drills"


def test_pptx_slides_are_pages() -> None:
    chunks = parse(docs.pptx(), "fleet.pptx", ChunkingOptions(combine_text_under_n_chars=0))
    first = chunk_with(chunks, "Twelve trawlers")
    second = chunk_with(chunks, "sea survival training")
    assert (first.page_number, first.section, first.title) == (1, "slide 1", "Fleet Overview")
    assert (second.page_number, second.section, second.title) == (2, "slide 2", "Crew Training")


def test_xlsx_sheets_are_sections() -> None:
    chunks = parse(docs.xlsx(), "market.xlsx")
    catches = chunk_with(chunks, "mackerel")
    prices = chunk_with(chunks, "lobster")
    assert (catches.section, catches.page_number) == ("Catches", 1)
    assert (prices.section, prices.page_number) == ("Prices", 2)


def test_pdf_text_layer_with_page_numbers() -> None:
    pdf = docs.pdf(docs.TWO_PAGE_PDF_PAGES)
    chunks = parse(pdf, "report.pdf", ChunkingOptions(combine_text_under_n_chars=0))
    cargo = chunk_with(chunks, "handled more cargo this year")
    dredging = chunk_with(chunks, "dredged to a depth of twelve metres")
    assert (cargo.page_number, cargo.title) == (1, "Annual Harbour Report")
    assert (dredging.page_number, dredging.title) == (2, "Dredging Works")


def test_doc_extension_with_docx_content_is_parsed_as_docx() -> None:
    assert detect_format("old-name.doc", docs.docx()).kind == "docx"
    assert chunk_with(parse(docs.docx(), "old-name.doc"), "Life jackets")


def test_chunks_respect_max_characters_and_overlap() -> None:
    paragraphs = [
        f"Paragraph {i} tells how the harbour crane number {i} lifted {i * 3} containers "
        "onto the quay before the evening tide turned and the ships left for the open sea."
        for i in range(40)
    ]
    text = "# Crane Log\n\n" + "\n\n".join(paragraphs)
    for options in (
        ChunkingOptions(max_characters=300, new_after_n_chars=200, combine_text_under_n_chars=0),
        ChunkingOptions(max_characters=250, new_after_n_chars=250, overlap=40),
    ):
        chunks = parse(text, "cranes.md", options)  # parse() asserts len <= max_characters
        assert len(chunks) > 10
        assert all(chunk.title == "Crane Log" for chunk in chunks)
        joined = " ".join(chunk.text for chunk in chunks)
        assert all(f"crane number {i} " in joined for i in range(40))


# --- rejections ----------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"   \n\t  ", b"\x00\x00\x00"])
def test_empty_documents(data: bytes) -> None:
    assert rejection(data, "nothing.txt").reason == "empty"


def test_truncated_pdf_is_corrupt() -> None:
    pdf = docs.pdf(docs.TWO_PAGE_PDF_PAGES)
    rejected = rejection(pdf[:120], "truncated.pdf")
    assert rejected.reason == "corrupt"
    assert rejected.detail.startswith("pdfminer")


def test_file_claiming_a_binary_format_without_its_content_is_corrupt() -> None:
    rejected = rejection(b"this is not a zip file at all", "report.docx")
    assert rejected.reason == "corrupt"


def test_encrypted_pdf() -> None:
    encrypted = docs.encrypted_pdf(docs.pdf(docs.TWO_PAGE_PDF_PAGES))
    rejected = rejection(encrypted, "locked.pdf")
    assert rejected.reason == "encrypted"
    assert "Password" in rejected.detail


def test_password_protected_office_document() -> None:
    pytest.importorskip("msoffcrypto")
    encrypted = docs.encrypted_ooxml(docs.xlsx())
    assert encrypted.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1")  # a CFB container, not a zip
    for name in ("locked.xlsx", "locked.docx", "locked"):
        assert rejection(encrypted, name).reason == "encrypted"
    assert content_type_for("locked.xlsx", encrypted) == "application/encrypted"


@pytest.mark.parametrize(
    ("filename", "data", "word"),
    [
        ("pixel.png", docs.png(), "image"),
        ("pixel.txt", docs.png(), "image"),  # content wins over the extension
        ("tone.wav", docs.wav(), "audio"),
        ("bundle.zip", docs.zip_archive(), "archive"),
        ("script.py", b"print('hello')\n", ".py"),
        ("README", b"plain words\n", "without an extension"),
    ],
)
def test_unsupported_types(filename: str, data: bytes, word: str) -> None:
    rejected = rejection(data, filename)
    assert rejected.reason == "unsupported_type"
    assert word in rejected.detail
    assert not is_supported(filename, data)


def test_image_only_office_document_has_no_text() -> None:
    from pptx import Presentation
    from pptx.util import Inches

    presentation = Presentation()
    slide = presentation.slides.add_slide(presentation.slide_layouts[6])  # blank
    slide.shapes.add_picture(io.BytesIO(docs.png()), Inches(1), Inches(1))
    buffer = io.BytesIO()
    presentation.save(buffer)
    assert rejection(buffer.getvalue(), "pictures.pptx").reason == "no_text"


# --- encodings and cleaning ----------------------------------------------------------------------

UTF16_TEXT = "Le café du port ouvre à six heures.\n\nThe harbour café opens at six."


@pytest.mark.parametrize(
    "data",
    [
        codecs.BOM_UTF16_LE + UTF16_TEXT.encode("utf-16-le"),
        codecs.BOM_UTF16_BE + UTF16_TEXT.encode("utf-16-be"),
        UTF16_TEXT.encode("utf-16-le"),  # no BOM
        UTF16_TEXT.encode("utf-16-be"),  # no BOM
        UTF16_TEXT.encode("utf-32"),  # BOM
        UTF16_TEXT.encode("utf-32-le"),  # no BOM
        codecs.BOM_UTF8 + UTF16_TEXT.encode("utf-8"),
        UTF16_TEXT.encode("cp1252"),
    ],
)
def test_text_encodings(data: bytes) -> None:
    assert decode_text(data) == UTF16_TEXT
    text = " ".join(chunk.text for chunk in parse(data, "cafe.txt"))
    assert "Le café du port ouvre à six heures." in text
    assert "The harbour café opens at six." in text


def test_cp1252_html_keeps_its_accents() -> None:
    html = "<html><body><p>L'été était très chaud; le café coûtait 3,50 €.</p></body></html>"
    text = parse(html.encode("cp1252"), "ete.html")[0].text
    assert text == "L'été était très chaud; le café coûtait 3,50 €."


def test_nul_bytes_are_removed() -> None:
    chunks = parse(b"Fog\x00horn signals every\x00 thirty seconds.\x00\n", "fog.txt")
    assert chunks[0].text == "Foghorn signals every thirty seconds."


def test_clean_text_normalises_unicode_and_whitespace() -> None:
    decomposed = "Cafe\u0301  au\u00a0lait\t\tbien\u200b chaud\x07 \r\n\r\n\r\n\r\nfin\u00ad"
    assert clean_text(decomposed) == "Café au lait bien chaud\n\nfin"


# --- safety: parsers must not read the local file system -------------------------------------


def test_rst_include_cannot_read_local_files(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("the vault combination is 4-8-15-16")
    rst = f"Notes\n=====\n\n.. include:: {secret}\n\nPublic paragraph about the harbour.\n"
    text = " ".join(chunk.text for chunk in parse(rst, "notes.rst"))
    assert "Public paragraph" in text
    assert "vault" not in text


def test_xml_external_entities_are_not_resolved(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("the vault combination is 4-8-15-16")
    xml = (
        f'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY s SYSTEM "file://{secret}">]>'
        "<x><p>Public paragraph &s; about the harbour.</p></x>"
    )
    text = " ".join(chunk.text for chunk in parse(xml, "notes.xml"))
    assert "Public paragraph" in text
    assert "vault" not in text


# --- formats, options, errors --------------------------------------------------------------------


def test_content_types() -> None:
    assert content_type_for("a.pdf", docs.pdf([["x"]])) == "application/pdf"
    assert content_type_for("a.doc", docs.docx()).endswith("wordprocessingml.document")
    assert content_type_for("a.md", b"# Title\n") == "text/markdown"
    assert content_type_for("a.png", docs.png()) == "image/png"
    assert content_type_for("a.txt", b"") == "application/x-empty"


def test_fingerprint_is_stable_and_changes_with_every_option() -> None:
    base = ChunkingOptions()
    assert base.fingerprint() == ChunkingOptions().fingerprint()
    # pdf_strategy has one valid value ("fast"), so it cannot change yet.
    changes: dict[str, Any] = {
        "max_characters": 1000,
        "new_after_n_chars": 500,
        "overlap": 50,
        "combine_text_under_n_chars": 100,
    }
    assert set(changes) | {"pdf_strategy"} == {f.name for f in dataclasses.fields(base)}
    fingerprints = {base.fingerprint()}
    for name, value in changes.items():
        fingerprints.add(dataclasses.replace(base, **{name: value}).fingerprint())
    assert len(fingerprints) == len(changes) + 1


def test_fingerprint_covers_parser_version(monkeypatch: pytest.MonkeyPatch) -> None:
    from lorechat_pipeline.core.parsing import partition

    before = ChunkingOptions().fingerprint()
    monkeypatch.setattr(partition, "PARSER_VERSION", str(int(PARSER_VERSION) + 1))
    assert ChunkingOptions().fingerprint() != before


def test_describe() -> None:
    description = ChunkingOptions().describe()
    assert description.startswith("by_title(max=800,new_after=600,overlap=0,combine=200,pdf=fast)")
    assert f"/parser-{PARSER_VERSION}/unstructured-0.27.32" in description


@pytest.mark.parametrize(
    "bad",
    [
        {"max_characters": 0},
        {"new_after_n_chars": 900},
        {"overlap": 800},
        {"combine_text_under_n_chars": 801},
        {"pdf_strategy": "hi_res"},
    ],
)
def test_invalid_options(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        ChunkingOptions(**bad)  # type: ignore[arg-type]


def test_document_rejected_survives_pickling() -> None:
    rejected = pickle.loads(pickle.dumps(DocumentRejected("corrupt", "pdfminer: bad xref")))
    assert (rejected.reason, rejected.detail) == ("corrupt", "pdfminer: bad xref")
    assert str(rejected) == "corrupt: pdfminer: bad xref"
    with pytest.raises(ValueError, match="unknown rejection reason"):
        DocumentRejected("weird", "no such reason")
