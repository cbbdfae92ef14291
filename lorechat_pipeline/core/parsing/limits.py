"""Per-document limits checked around parsing, so a hostile document costs bounded work.

Time and memory are bounded by the worker process (a deadline, RLIMIT_AS); these bound what a
document may unfold into: a ZIP container's inflated size (checked from its central directory
before any entry is inflated), the characters of text and the chunks it yields. Each refusal
names the setting that raises the limit.
"""

import io
import zipfile
from dataclasses import dataclass

from lorechat_pipeline.core.parsing.errors import DocumentRejected

MIB = 1024 * 1024
# Entries smaller than this may compress as well as they like (a blank stylesheet).
RATIO_FLOOR_BYTES = MIB
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


@dataclass(frozen=True)
class ParseLimits:
    # Sum of the declared sizes of a ZIP container's entries (docx, xlsx, pptx, odt, epub, zip).
    max_inflated_bytes: int = 512 * MIB
    # Inflated / compressed size of any entry past RATIO_FLOOR_BYTES (real Office files: < 50).
    max_compression_ratio: float = 200.0
    # Characters of text (text formats: decoded; others: extracted).
    max_characters: int = 10_000_000
    max_chunks: int = 20_000

    def __post_init__(self) -> None:
        if min(self.max_inflated_bytes, self.max_characters, self.max_chunks) < 1:
            raise ValueError("parse limits must be positive")
        if self.max_compression_ratio < 1:
            raise ValueError("max_compression_ratio must be at least 1")

    def check_container(self, data: bytes) -> None:
        """Refuse a ZIP container whose entries would inflate past the limits. Python's zipfile
        (what python-docx, openpyxl and python-pptx read with) never inflates an entry past its
        declared size, so the central directory is what a parser would get."""
        if not data.startswith(_ZIP_MAGIC):
            return
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                entries = archive.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            return  # format detection reports the broken container
        inflated = sum(entry.file_size for entry in entries)
        if inflated > self.max_inflated_bytes:
            raise DocumentRejected(
                "decompression_bomb",
                f"{len(entries)} ZIP entries inflate to {inflated} bytes, more than "
                f"LORECHAT_MAX_INFLATED_BYTES={self.max_inflated_bytes}",
            )
        for entry in entries:
            if entry.file_size <= RATIO_FLOOR_BYTES:
                continue
            ratio = entry.file_size / max(entry.compress_size, 1)
            if ratio > self.max_compression_ratio:
                raise DocumentRejected(
                    "decompression_bomb",
                    f"ZIP entry {entry.filename!r} inflates {ratio:.0f}x ({entry.file_size} "
                    f"bytes), more than LORECHAT_MAX_COMPRESSION_RATIO="
                    f"{self.max_compression_ratio:g}",
                )

    def check_characters(self, characters: int, what: str) -> None:
        if characters > self.max_characters:
            raise DocumentRejected(
                "too_much_text",
                f"{characters} characters of {what}, more than "
                f"LORECHAT_MAX_DOCUMENT_CHARACTERS={self.max_characters}",
            )

    def check_chunks(self, chunks: int) -> None:
        if chunks > self.max_chunks:
            raise DocumentRejected(
                "too_many_chunks",
                f"{chunks} chunks, more than LORECHAT_MAX_DOCUMENT_CHUNKS={self.max_chunks}",
            )
