"""Element text as we index it: NFC, no invisible characters, single spaces, and without the
elements that are page furniture rather than content."""

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

_DROPPED_CATEGORIES = {"PageBreak", "PageNumber"}
_PDF_FURNITURE = {"Header", "Footer"}  # running heads repeated on every page
# Controls (but not tab, newline, vertical tab, form feed, NEL: they become spaces), soft hyphens,
# zero-width spaces, BOMs and lone surrogates (which cannot even be encoded as UTF-8).
_INVISIBLE = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u00ad\u200b\ufeff\ud800-\udfff]")
_INLINE_SPACE = re.compile(r"[^\S\n]+")
_SPACE_AROUND_NEWLINE = re.compile(r" ?\n ?")
_BLANK_LINES = re.compile(r"\n{3,}")


def clean_text(text: str) -> str:
    """NFC; no NUL, control, soft-hyphen, zero-width or lone-surrogate characters; single spaces,
    at most one blank line."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _INVISIBLE.sub("", text)
    text = _INLINE_SPACE.sub(" ", text)
    text = _SPACE_AROUND_NEWLINE.sub("\n", text)
    return _BLANK_LINES.sub("\n\n", text).strip()


def clean_elements(elements: Sequence[Any], kind: str) -> list[Any]:
    kept = []
    for element in elements:
        category = element.category
        if category in _DROPPED_CATEGORIES or (kind == "pdf" and category in _PDF_FURNITURE):
            continue
        text = clean_text(element.text or "")
        if text:
            element.text = text
            kept.append(element)
    return kept
