"""Bytes to text for the text formats: BOMs, BOM-less UTF-16/32, UTF-8, a declared charset,
then cp1252 (latin-1 for the five bytes cp1252 leaves undefined)."""

import codecs
import re

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


def is_clean_text(data: bytes) -> bool:
    """UTF-8 or UTF-16/32 text without stray control bytes."""
    if wide_encoding(data):
        return True
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(data[:65536], final=False)
    except UnicodeDecodeError:
        return False
    return not _CONTROL.search(text)


def looks_binary(data: bytes) -> bool:
    """Bytes that no text encoding we accept would turn into readable text."""
    if wide_encoding(data):
        return False
    sample = data[:8192]
    control = sum(1 for byte in sample if byte < 32 and byte not in b"\t\n\r\f\v\x1b\x00")
    return control > 0.1 * len(sample) or sample.count(0) > 0.3 * len(sample)
