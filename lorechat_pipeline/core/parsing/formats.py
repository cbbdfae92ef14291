"""Which parser a document gets, decided from its bytes first and its file name second.

Binary containers (PDF, OLE/CFB, ZIP, RTF) are recognised by their content, so a `.doc` that is
really a DOCX is parsed as DOCX and a password-protected `.xlsx` (an encrypted CFB container) is
rejected as encrypted. Text formats cannot be told apart by content (Markdown, reStructuredText
and plain text look alike), so for those the extension decides, after libmagic has ruled out
images, audio and archives.
"""

import codecs
import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

from lorechat_pipeline.core.parsing.errors import DocumentRejected


@dataclass(frozen=True)
class DocumentFormat:
    kind: str  # our parser key: "pdf", "docx", "md", ...
    mime: str
    # Text formats are decoded by us (BOMs, UTF-16, cp1252); the others are containers that are
    # recognised by their content, so a file claiming one without that content is corrupt.
    textual: bool


_OOXML = "application/vnd.openxmlformats-officedocument"
_FORMATS = {
    f.kind: f
    for f in (
        DocumentFormat("pdf", "application/pdf", False),
        DocumentFormat("docx", f"{_OOXML}.wordprocessingml.document", False),
        DocumentFormat("pptx", f"{_OOXML}.presentationml.presentation", False),
        DocumentFormat("xlsx", f"{_OOXML}.spreadsheetml.sheet", False),
        DocumentFormat("odt", "application/vnd.oasis.opendocument.text", False),
        DocumentFormat("epub", "application/epub+zip", False),
        DocumentFormat("rtf", "application/rtf", False),
        DocumentFormat("msg", "application/vnd.ms-outlook", False),
        DocumentFormat("eml", "message/rfc822", True),
        DocumentFormat("html", "text/html", True),
        DocumentFormat("md", "text/markdown", True),
        DocumentFormat("txt", "text/plain", True),
        DocumentFormat("csv", "text/csv", True),
        DocumentFormat("tsv", "text/tab-separated-values", True),
        DocumentFormat("rst", "text/x-rst", True),
        DocumentFormat("org", "text/org", True),
        DocumentFormat("json", "application/json", True),
        DocumentFormat("ndjson", "application/x-ndjson", True),
        DocumentFormat("xml", "application/xml", True),
    )
}
SUPPORTED_KINDS = tuple(_FORMATS)

EXTENSIONS = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".pptx": "pptx",
    ".xlsx": "xlsx",
    ".odt": "odt",
    ".epub": "epub",
    ".rtf": "rtf",
    ".msg": "msg",
    ".eml": "eml",
    ".html": "html",
    ".htm": "html",
    ".md": "md",
    ".markdown": "md",
    ".txt": "txt",
    ".text": "txt",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".rst": "rst",
    ".org": "org",
    ".json": "json",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".xml": "xml",
}

_LEGACY_OFFICE = {
    # CFB stream that marks the format -> what to tell the user
    "WordDocument": "legacy binary Word (.doc)",
    "PowerPoint Document": "legacy binary PowerPoint (.ppt)",
    "Workbook": "legacy binary Excel (.xls)",
    "Book": "legacy binary Excel 5 (.xls)",
}
_LEGACY_EXTENSIONS = (".doc", ".ppt", ".xls")
_NEEDS_LIBREOFFICE = "needs LibreOffice, which is not installed; save it as .docx/.pptx/.xlsx"

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_BLANK_BYTES = b" \t\r\n\f\v\x00"

_OOXML_MAIN_PARTS = {
    "word/document.xml": "docx",
    "ppt/presentation.xml": "pptx",
    "xl/workbook.xml": "xlsx",
}
_ZIP_MIMETYPES = {"application/vnd.oasis.opendocument.text": "odt", "application/epub+zip": "epub"}

_NON_DOCUMENTS = {
    "image/": "image; OCR is not available offline",
    "audio/": "audio; speech-to-text is not available",
    "video/": "video",
    "font/": "font",
}
_ARCHIVES = {
    "application/zip",
    "application/gzip",
    "application/x-gzip",
    "application/x-bzip2",
    "application/x-xz",
    "application/zstd",
    "application/x-7z-compressed",
    "application/x-rar",
    "application/vnd.rar",
    "application/x-tar",
}


def extension_of(filename: str) -> str:
    return PurePosixPath(filename.replace("\\", "/")).suffix.lower()


def detect_format(filename: str, data: bytes) -> DocumentFormat:
    """The format to parse `data` as; raises DocumentRejected when it cannot be parsed."""
    if not data.strip(_BLANK_BYTES):
        raise DocumentRejected("empty", f"{len(data)} bytes with no content")
    extension = extension_of(filename)
    if kind := _sniff_container(data, extension):
        return _FORMATS[kind]
    claimed = _FORMATS.get(EXTENSIONS.get(extension, ""))
    # Clean text under a text extension is trusted over libmagic, which sometimes reads
    # a few text bytes as an audio or image signature.
    if claimed and claimed.textual and _is_clean_text(data):
        return claimed

    mime = libmagic_mime(data)
    _reject_non_documents(mime)
    if extension in _LEGACY_EXTENSIONS:
        # Word and Excel can "save as" HTML under the old extension.
        if mime == "text/html":
            return _FORMATS["html"]
        raise DocumentRejected("unsupported_type", f"{extension} file of type {mime}")
    if claimed is None:
        what = f"extension {extension!r}" if extension else "a file without an extension"
        raise DocumentRejected("unsupported_type", f"{what} is not a supported type ({mime})")
    if not claimed.textual:
        raise DocumentRejected("corrupt", f"{extension} file whose content is {mime}")
    if _looks_binary(data):
        raise DocumentRejected("unsupported_type", f"{extension} file with binary content")
    return claimed


def is_supported(filename: str, data: bytes) -> bool:
    try:
        detect_format(filename, data)
    except DocumentRejected:
        return False
    return True


def content_type_for(filename: str, data: bytes) -> str:
    """A MIME type for the document: the parser's format when supported, else libmagic's guess."""
    try:
        return detect_format(filename, data).mime
    except DocumentRejected as rejected:
        if rejected.reason == "encrypted":
            return "application/encrypted"
    if not data:
        return "application/x-empty"
    return libmagic_mime(data)


def libmagic_mime(data: bytes) -> str:
    try:
        import magic
    except ImportError:  # no libmagic: the container sniffing still decides the binary formats
        return "application/octet-stream"
    mime = magic.from_buffer(data[:65536], mime=True)
    return str(mime or "application/octet-stream")


def _reject_non_documents(mime: str) -> None:
    if mime == "image/svg+xml":  # XML text, and HTML that starts with an inline SVG
        return
    for prefix, what in _NON_DOCUMENTS.items():
        if mime.startswith(prefix):
            raise DocumentRejected("unsupported_type", f"{what} ({mime})")
    if mime in _ARCHIVES:
        raise DocumentRejected("unsupported_type", f"archive ({mime}); archives are not unpacked")


def _sniff_container(data: bytes, extension: str) -> str | None:
    if b"%PDF-" in data[:1024]:
        return "pdf"
    if data.startswith(_OLE_MAGIC):
        return _ole_kind(data)
    if data.startswith(_ZIP_MAGIC):
        return _zip_kind(data, extension)
    if data.lstrip()[:5] == b"{\\rtf":
        return "rtf"
    return None


def _ole_kind(data: bytes) -> str:
    """Compound File Binary: Outlook messages, legacy Office, or encrypted OOXML."""
    import olefile

    try:
        with olefile.OleFileIO(io.BytesIO(data)) as ole:
            top = {path[0] for path in ole.listdir(streams=True, storages=True)}
    except Exception as error:
        raise DocumentRejected("corrupt", f"unreadable OLE/CFB container: {error}") from error
    if {"EncryptionInfo", "EncryptedPackage"} & top:
        raise DocumentRejected("encrypted", "password-protected Office document (encrypted CFB)")
    if "__properties_version1.0" in top:
        return "msg"
    for stream, what in _LEGACY_OFFICE.items():
        if stream in top:
            raise DocumentRejected("unsupported_type", f"{what} {_NEEDS_LIBREOFFICE}")
    raise DocumentRejected("unsupported_type", "OLE/CFB container of an unknown kind")


def _zip_kind(data: bytes, extension: str) -> str:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
            mimetype = archive.read("mimetype")[:100] if "mimetype" in names else b""
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        claimed = _FORMATS.get(EXTENSIONS.get(extension, ""))
        reason = "corrupt" if claimed and not claimed.textual else "unsupported_type"
        raise DocumentRejected(reason, f"unreadable ZIP container: {error}") from error
    for part, kind in _OOXML_MAIN_PARTS.items():
        if part in names:
            return kind
    declared = mimetype.decode("ascii", "replace").strip()
    if declared in _ZIP_MIMETYPES:
        return _ZIP_MIMETYPES[declared]
    if declared.startswith("application/vnd.oasis.opendocument."):
        raise DocumentRejected("unsupported_type", f"OpenDocument {declared}: only text (.odt)")
    raise DocumentRejected("unsupported_type", "ZIP archive; archives are not unpacked")


# --- text decoding -----------------------------------------------------------------------------

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_DECLARED_CHARSET = re.compile(rb"""(?:charset|encoding)\s*=\s*["']?([A-Za-z0-9._:-]+)""")
# What browsers do: a page that says latin-1 or ascii is decoded as windows-1252.
_WHATWG_ALIASES = {"iso8859-1": "cp1252", "ascii": "cp1252"}
_CONTROL = re.compile(r"[\x01-\x08\x0e-\x1a\x1c-\x1f]")


def decode_text(data: bytes, *, honour_declared_charset: bool = False) -> str:
    """Text from bytes: BOMs, BOM-less UTF-16/32, UTF-8, then a declared charset, then cp1252.

    NUL characters are dropped: they are never content, and they break downstream tools.
    """
    return _decode(data, honour_declared_charset).replace("\x00", "")


def wide_encoding(data: bytes) -> str | None:
    """UTF-16 or UTF-32 (BOM or BOM-less), else None: what must be transcoded before parsing."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return None if encoding == "utf-8" else encoding
    return _guess_wide_encoding(data[:4096])


def _decode(data: bytes, honour_declared_charset: bool) -> str:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data[len(bom) :].decode(encoding, errors="replace")
    if wide := _guess_wide_encoding(data[:4096]):
        return data.decode(wide, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if honour_declared_charset and (declared := _declared_charset(data[:4096])):
        try:
            return data.decode(declared)
        except UnicodeDecodeError:
            pass
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:  # five bytes are undefined in cp1252; latin-1 maps every byte
        return data.decode("latin-1")


def _declared_charset(head: bytes) -> str | None:
    match = _DECLARED_CHARSET.search(head)
    if not match:
        return None
    try:
        name = codecs.lookup(match.group(1).decode("ascii")).name
    except LookupError:
        return None
    if name.startswith(("utf-16", "utf-32")):  # a declaration copied from a re-encoded page
        return None
    return _WHATWG_ALIASES.get(name, name)


def _guess_wide_encoding(sample: bytes) -> str | None:
    """BOM-less UTF-16/32 from where the NUL bytes fall (works for text that is mostly Latin)."""
    if len(sample) < 4:
        return None
    width_checks = (
        (4, "utf-32-le", (2, 3), 0),
        (4, "utf-32-be", (0, 1), 3),
        (2, "utf-16-le", (1,), 0),
        (2, "utf-16-be", (0,), 1),
    )
    for width, encoding, zero_lanes, text_lane in width_checks:
        units = len(sample) // width
        if units == 0:
            continue
        lanes = [sample[lane::width][:units] for lane in range(width)]
        zeros = all(lanes[lane].count(0) >= 0.6 * units for lane in zero_lanes)
        if zeros and lanes[text_lane].count(0) <= 0.1 * units:
            return encoding
    return None


def _is_clean_text(data: bytes) -> bool:
    """UTF-8 or UTF-16/32 text without stray control bytes."""
    if wide_encoding(data):
        return True
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(data[:65536], final=False)
    except UnicodeDecodeError:
        return False
    return not _CONTROL.search(text)


def _looks_binary(data: bytes) -> bool:
    """Bytes that no text encoding we accept would turn into readable text."""
    if wide_encoding(data):
        return False
    sample = data[:8192]
    control = sum(1 for byte in sample if byte < 32 and byte not in b"\t\n\r\f\v\x1b\x00")
    return control > 0.1 * len(sample) or sample.count(0) > 0.3 * len(sample)
