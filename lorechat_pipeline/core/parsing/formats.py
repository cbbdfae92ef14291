"""Which parser a document gets, decided from its bytes first and its file name second.

Binary containers (PDF, OLE/CFB, ZIP, RTF) are recognised by their content, so a `.doc` that is
really a DOCX is parsed as DOCX and a password-protected `.xlsx` (an encrypted CFB container) is
rejected as encrypted. Text formats cannot be told apart by content (Markdown, reStructuredText
and plain text look alike), so for those the extension decides, after libmagic has ruled out
images, audio and archives.
"""

import io
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

from lorechat_pipeline.core.parsing.encoding import is_clean_text, looks_binary
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
    if claimed and claimed.textual and is_clean_text(data):
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
    if looks_binary(data):
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
    # The header may follow up to 1 KB of junk, but only a .pdf gets that benefit of the doubt.
    if data.startswith(b"%PDF-") or (extension == ".pdf" and b"%PDF-" in data[:1024]):
        return "pdf"
    if data.startswith(_OLE_MAGIC):
        return _ole_kind(data)
    if data.startswith(_ZIP_MAGIC):
        return _zip_kind(data, extension)
    if data[:64].lstrip().startswith(b"{\\rtf"):
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
            mimetype = b""
            if "mimetype" in names:
                with archive.open("mimetype") as entry:  # never inflate more than we read
                    mimetype = entry.read(100)
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
