"""Generators of hostile and broken documents, shared by the tests and bench/hostile_inputs.py.

Each writes one file cheaply: bombs are compressed as they are streamed (never held inflated),
the sparse file is a hole made with truncate, the empty-page PDF repeats one page object.
"""

import io
import itertools
import os
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024
GIB = 1024 * MIB

CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
    'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="{part}" ContentType="{content_type}"/></Types>'
)
ROOT_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/officeDocument" Target="{target}"/></Relationships>'
)
DOCX_BODY = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
    "<w:body><w:p><w:r><w:t>An innocent looking paragraph.</w:t></w:r></w:p></w:body>"
    "</w:document>"
)
XLSX_WORKBOOK = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
    '<sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>'
)
XLSX_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/worksheet" Target="worksheets/sheet1.xml"/></Relationships>'
)
XLSX_SHEET_HEAD = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
)
XLSX_ROW = '<row r="{n}"><c r="A{n}" t="inlineStr"><is><t>cell {n}</t></is></c></row>'


class BombWriter:
    """A ZIP file written by hand so that a multi-GiB entry costs milliseconds: its filler is
    deflated once, after a full flush (which resets the compressor), and that block repeated.
    Small entries are stored as they are. Entries past 4 GiB get ZIP64 size fields."""

    def __init__(self, path: Path):
        self.handle = path.open("wb")
        self.central: list[bytes] = []

    def __enter__(self) -> "BombWriter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def writestr(self, name: str, text: str) -> None:
        data = text.encode()
        self._entry(name, zipfile.ZIP_STORED, zlib.crc32(data), len(data), [data])

    def write_filler(
        self, name: str, head: bytes, filler: bytes, size: int, tail: bytes = b""
    ) -> None:
        """`head`, `filler` repeated to at least `size` bytes, then `tail`, deflated."""
        block = filler * max(1, MIB // len(filler))
        count = -(-size // len(block))
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        first = compressor.compress(head) + compressor.flush(zlib.Z_FULL_FLUSH)
        repeated = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
        last = compressor.compress(tail) + compressor.flush()
        crc = zlib.crc32(head)
        for _ in range(count):
            crc = zlib.crc32(block, crc)
        crc = zlib.crc32(tail, crc)
        inflated = len(head) + count * len(block) + len(tail)
        pieces = itertools.chain([first], itertools.repeat(repeated, count), [last])
        self._entry(name, zipfile.ZIP_DEFLATED, crc, inflated, pieces)

    def _entry(
        self, name: str, method: int, crc: int, inflated: int, pieces: Iterable[bytes]
    ) -> None:
        offset = self.handle.tell()
        encoded = name.encode()
        zip64 = inflated >= 0xFFFFFFFF
        version = 45 if zip64 else 20
        # Sizes are patched in after the data: a local header, then the data.
        self.handle.write(b"\0" * (30 + len(encoded) + (20 if zip64 else 0)))
        compressed = 0
        for piece in pieces:
            self.handle.write(piece)
            compressed += len(piece)
        end = self.handle.tell()
        small = 0xFFFFFFFF if zip64 else inflated
        local_extra = struct.pack("<HHQQ", 1, 16, inflated, compressed) if zip64 else b""
        local = struct.pack(
            "<IHHHHHIIIHH",
            0x04034B50,
            version,
            0,
            method,
            0,
            0x21,
            crc,
            0xFFFFFFFF if zip64 else compressed,
            small,
            len(encoded),
            len(local_extra),
        )
        self.handle.seek(offset)
        self.handle.write(local + encoded + local_extra)
        self.handle.seek(end)
        central_extra = struct.pack("<HHQQ", 1, 16, inflated, compressed) if zip64 else b""
        self.central.append(
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                0x02014B50,
                version,
                version,
                0,
                method,
                0,
                0x21,
                crc,
                0xFFFFFFFF if zip64 else compressed,
                small,
                len(encoded),
                len(central_extra),
                0,
                0,
                0,
                0,
                offset,
            )
            + encoded
            + central_extra
        )

    def close(self) -> None:
        start = self.handle.tell()
        for record in self.central:
            self.handle.write(record)
        size = self.handle.tell() - start
        count = len(self.central)
        self.handle.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, size, start, 0))
        self.handle.close()


def docx_bomb(path: Path, inflated: int) -> None:
    """A valid .docx whose document.xml is the body, then `inflated` bytes of XML whitespace
    (allowed after the root element): Word would open it; every byte must be inflated."""
    body = DOCX_BODY.encode()
    with BombWriter(path) as archive:
        content_type = (
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"
        )
        archive.writestr(
            "[Content_Types].xml",
            CONTENT_TYPES.format(part="/word/document.xml", content_type=content_type),
        )
        archive.writestr("_rels/.rels", ROOT_RELS.format(target="word/document.xml"))
        archive.write_filler("word/document.xml", body, b" ", inflated)


def xlsx_bomb(path: Path, inflated: int) -> None:
    """A valid .xlsx whose one sheet holds `inflated` bytes of (compressible) rows."""
    row = XLSX_ROW.format(n=1).encode()
    with BombWriter(path) as archive:
        content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"
        archive.writestr(
            "[Content_Types].xml",
            CONTENT_TYPES.format(part="/xl/workbook.xml", content_type=content_type),
        )
        archive.writestr("_rels/.rels", ROOT_RELS.format(target="xl/workbook.xml"))
        archive.writestr("xl/workbook.xml", XLSX_WORKBOOK)
        archive.writestr("xl/_rels/workbook.xml.rels", XLSX_RELS)
        archive.write_filler(
            "xl/worksheets/sheet1.xml",
            XLSX_SHEET_HEAD.encode(),
            row,
            inflated,
            b"</sheetData></worksheet>",
        )


def zip_bomb(path: Path, inflated: int) -> None:
    """A plain .zip of one entry of zeros."""
    with BombWriter(path) as archive:
        archive.write_filler("zeros.bin", b"", b"\0", inflated)


def sparse_file(path: Path, size: int) -> None:
    """`size` bytes that take no disk space: a hole, never written out."""
    with path.open("wb") as handle:
        handle.truncate(size)


def long_line(path: Path, size: int) -> None:
    """One line of words and no newline, written in 1 MiB pieces."""
    words = b"lorem ipsum dolor sit amet consectetur adipiscing elit "
    block = words * (MIB // len(words))
    with path.open("wb") as handle:
        left = size
        while left > 0:
            piece = block[: min(left, len(block))]
            handle.write(piece)
            left -= len(piece)


def nested_html(path: Path, depth: int) -> None:
    path.write_bytes(
        b"<html><body>"
        + b"<div>" * depth
        + b"Deep inside the nesting."
        + b"</div>" * depth
        + b"</body></html>"
    )


def empty_pages_pdf(path: Path, pages: int) -> None:
    """`pages` blank pages that all share one page dictionary's contents (pikepdf)."""
    import pikepdf

    pdf = pikepdf.new()
    for _ in range(pages):
        pdf.add_blank_page(page_size=(612, 792))
    pdf.save(path)


def nul_bytes_text(path: Path) -> None:
    text = b"Notes on the tide tables.\x00\x00 High water at noon;\x00 low water at six.\n"
    path.write_bytes(text * 50 + b"\x00" * 4096 + b"The end of the notes.\n")


def invalid_utf8_text(path: Path) -> None:
    """UTF-8 text with truncated sequences, lone continuation bytes and overlongs."""
    path.write_bytes(
        "Caf\u00e9 opening hours, every day of the week.\n".encode() * 20
        + b"broken \xc3 sequence \x80\x80 overlong \xc0\xaf surrogate \xed\xa0\x80 end\n"
        + b"\xff\xfe not a BOM in the middle \xf8\x88\x80\x80\x80\n"
    )


@dataclass(frozen=True)
class HostileCase:
    name: str  # the file's name in the source
    describe: str  # what it is, for the report
    make: Callable[[Path], None]
    # Outcomes accepted: "indexed" or quarantine reasons.
    expected: frozenset[str]


def hostile_cases(*, scale: int = 1) -> list[HostileCase]:
    """The generated cases; `scale` multiplies the bombs and sizes for the long variants."""
    bomb = scale * GIB
    bombed = frozenset({"decompression_bomb"})
    # Scaled up, the xlsx bomb's rows compress to more than LORECHAT_MAX_DOCUMENT_BYTES and the
    # nested HTML's markup is more than LORECHAT_MAX_DOCUMENT_CHARACTERS: refused earlier.
    big = scale > 1
    return [
        HostileCase(
            "bomb.docx",
            f"docx whose document.xml inflates to {bomb // GIB} GiB",
            lambda p: docx_bomb(p, bomb),
            bombed,
        ),
        HostileCase(
            "bomb.xlsx",
            f"xlsx whose sheet inflates to {bomb // GIB} GiB",
            lambda p: xlsx_bomb(p, bomb),
            bombed | {"too_large"} if big else bombed,
        ),
        HostileCase(
            "bomb.zip",
            f"zip of one entry inflating to {bomb // GIB} GiB",
            lambda p: zip_bomb(p, bomb),
            bombed,
        ),
        HostileCase(
            "sparse.txt",
            f"{scale} GiB sparse file (a hole)",
            lambda p: sparse_file(p, scale * GIB),
            frozenset({"too_large"}),
        ),
        HostileCase(
            "long-line.txt",
            "one 50 MB line of words",
            lambda p: long_line(p, 50_000_000),
            frozenset({"too_much_text"}),
        ),
        HostileCase(
            "nested.html",
            f"HTML nested {100_000 * scale:,} <div>s deep",
            lambda p: nested_html(p, 100_000 * scale),
            frozenset({"corrupt", "too_much_text"} if big else {"corrupt"}),
        ),
        HostileCase(
            "empty-pages.pdf",
            f"PDF of {10_000 * scale:,} empty pages",
            lambda p: empty_pages_pdf(p, 10_000 * scale),
            frozenset({"no_text"}),
        ),
        HostileCase("nul-bytes.txt", "text with NUL bytes", nul_bytes_text, frozenset({"indexed"})),
        HostileCase(
            "invalid-utf8.txt",
            "text with invalid UTF-8 sequences",
            invalid_utf8_text,
            frozenset({"indexed"}),
        ),
    ]


def pdf_page_count(data: bytes) -> int:
    import pikepdf

    with pikepdf.open(io.BytesIO(data)) as pdf:
        return len(pdf.pages)


def disk_usage(path: Path) -> int:
    """Bytes actually allocated on disk (a sparse file's hole takes none)."""
    return os.stat(path).st_blocks * 512
