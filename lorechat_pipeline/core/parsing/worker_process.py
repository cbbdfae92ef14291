"""The loop inside each ParserPool worker process: warm up once, then parse what the pipe brings.

Replies: ("ready",) once warm; ("chunks", job_id, chunks) or ("rejected", job_id, (reason,
detail)) per document; ("failed", traceback) when the parsing stack itself is broken.
"""

import functools
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from lorechat_pipeline.core.parsing.errors import DocumentRejected
from lorechat_pipeline.core.parsing.limits import ParseLimits
from lorechat_pipeline.core.parsing.offline_nlp import ParsingEnvironmentError
from lorechat_pipeline.core.parsing.partition import ChunkingOptions, ParsedChunk, parse_and_chunk

logger = logging.getLogger(__name__)

ParseFunction = Callable[[bytes, str, ChunkingOptions], list[ParsedChunk]]

WORKER_ENVIRONMENT = {
    # One thread per worker: the workers are the parallelism, and torch/BLAS pools oversubscribe.
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
}


def worker_main(
    conn: Connection,
    options: ChunkingOptions,
    parse_function: ParseFunction | str | None,
    memory_limit_mb: int | None,
    limits: ParseLimits | None = None,
) -> None:
    try:
        # Its own process group, so that killing it also kills what it started (pandoc).
        os.setpgid(0, 0)
        os.environ.update(WORKER_ENVIRONMENT)
        # spaCy's thinc imports torch whenever it is installed: ~250 MB and ~3 s per worker, for
        # nothing, since no parser here uses it. An import of torch now fails, which thinc expects.
        sys.modules.setdefault("torch", None)  # type: ignore[arg-type]
        if memory_limit_mb is not None:
            import resource

            limit = memory_limit_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        parse = _resolve(parse_function, limits or ParseLimits())
        _warm_up()
    except BaseException:
        conn.send(("failed", traceback.format_exc()))
        return
    conn.send(("ready",))

    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        if message is None:
            return
        job_id, data, filename = message
        del message
        reply = _run(parse, job_id, data, filename, options)
        del data
        try:
            conn.send(reply)
        except MemoryError:
            reply = ("rejected", job_id, ("memory_exceeded", "out of memory sending the chunks"))
            conn.send(reply)
        if reply[0] == "rejected" and reply[2][0] == "memory_exceeded":
            return  # after a MemoryError, start afresh rather than trust this process


def _run(
    parse: ParseFunction, job_id: int, data: bytes, filename: str, options: ChunkingOptions
) -> tuple[Any, ...]:
    try:
        return ("chunks", job_id, parse(data, filename, options))
    except DocumentRejected as rejected:
        return ("rejected", job_id, (rejected.reason, rejected.detail))
    except MemoryError:
        return ("rejected", job_id, ("memory_exceeded", "out of memory while parsing"))
    except (ImportError, ParsingEnvironmentError):
        return ("failed", traceback.format_exc())
    except Exception as error:  # a bug, in our code or a parser's: lose the document, not the run
        logger.exception("parsing %s failed", filename)
        detail = f"{type(error).__name__}: {error}"
        return ("rejected", job_id, ("parser_crashed", detail))


def _resolve(parse_function: ParseFunction | str | None, limits: ParseLimits) -> ParseFunction:
    if parse_function is None:
        return functools.partial(parse_and_chunk, limits=limits)
    if callable(parse_function):
        return parse_function
    module, _, name = parse_function.replace(":", ".").rpartition(".")
    function: ParseFunction = getattr(importlib.import_module(module), name)
    return function


def _warm_up() -> None:
    """Pay the imports and the spaCy model once per worker, not on the first document."""
    from lorechat_pipeline.core.parsing.offline_nlp import warm_up
    from lorechat_pipeline.core.parsing.partition import PARTITIONERS, partitioner

    warm_up()
    for kind in PARTITIONERS:
        partitioner(kind)
    importlib.import_module("lorechat_pipeline.core.parsing.pdf")
    importlib.import_module("unstructured.partition.pdf_image.pdfminer_utils")
    importlib.import_module("unstructured.chunking.title")
