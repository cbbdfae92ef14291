"""Misbehaving parse functions for ParserPool tests, chosen by the document's file name.

They run inside the pool's worker processes (passed as `parse_function`), so they must be
importable module-level functions. Production code has no such hooks.
"""

import ctypes
import os
import subprocess
import time
from pathlib import Path

from lorechat_pipeline.core.parsing import ChunkingOptions, ParsedChunk, parse_and_chunk


def misbehaving_parse(data: bytes, filename: str, options: ChunkingOptions) -> list[ParsedChunk]:
    if filename.startswith("hang"):
        time.sleep(3600)
    elif filename.startswith("exit"):
        os._exit(1)
    elif filename.startswith("segfault"):
        ctypes.string_at(0)
    elif filename.startswith("bug"):
        raise KeyError("a bug in a parser")
    elif filename.startswith("orphan"):
        # Like pandoc: a child process the parser waits on. `data` says where to write its pid.
        child = subprocess.Popen(["sleep", "3600"])
        Path(data.decode()).write_text(str(child.pid))
        child.wait()
    elif filename.startswith("hog"):
        hog = [bytearray(64 * 1024 * 1024) for _ in range(1024)]  # 64 GiB, one block at a time
        return [ParsedChunk(len(hog), "", (), None, None, None)]
    return parse_and_chunk(data, filename, options)
