"""Documents in, chunks out: format detection, offline unstructured parsing, chunking by title,
and a pool of worker processes that contains hangs and crashes. Imports neither dagster nor
(until a document is parsed) unstructured; the offline environment (no telemetry, no hub) is set
by offline_nlp at import."""

from lorechat_pipeline.core.parsing.errors import REASONS, DocumentRejected
from lorechat_pipeline.core.parsing.formats import (
    SUPPORTED_KINDS,
    content_type_for,
    detect_format,
    is_supported,
)
from lorechat_pipeline.core.parsing.limits import ParseLimits
from lorechat_pipeline.core.parsing.offline_nlp import install_offline_nlp
from lorechat_pipeline.core.parsing.partition import (
    PARSER_VERSION,
    ChunkingOptions,
    ParsedChunk,
    parse_and_chunk,
)
from lorechat_pipeline.core.parsing.worker import ParserPool

__all__ = [
    "PARSER_VERSION",
    "REASONS",
    "SUPPORTED_KINDS",
    "ChunkingOptions",
    "DocumentRejected",
    "ParseLimits",
    "ParsedChunk",
    "ParserPool",
    "content_type_for",
    "detect_format",
    "install_offline_nlp",
    "is_supported",
    "parse_and_chunk",
]
