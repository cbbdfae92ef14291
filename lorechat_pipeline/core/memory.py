"""Memory given back to the system: glibc keeps freed heap memory by default, which reads as a
leak in a long-lived process (a run worker across shards, the serving container across index
versions). No dagster here: the serving container uses it too."""

import ctypes
import platform
from typing import Any

import pyarrow as pa

# glibc's mallopt parameter for the size above which an allocation gets its own mapping.
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 1024 * 1024  # as flat as 128 KiB in experiments, with fewer mmap calls


def _glibc() -> Any:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(None)
    except OSError:  # pragma: no cover - no C library to load
        return None


def bound_heap_retention() -> None:
    """Keep glibc from holding on to the memory of freed large buffers across shards.

    glibc raises its mmap threshold each time a large mapped buffer is freed (up to 32 MiB), so
    the model's activations and LanceDB's compaction and index buffers come to be carved out of
    per-thread heaps that fragment and are never given back: resident memory grew with every
    shard while the memory in use stayed flat. A fixed threshold gives each large buffer its own
    mapping, returned when freed. Process-wide; idempotent; a no-op off glibc.
    """
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)


def release_freed_memory() -> None:
    """Return free heap pages to the system (glibc only)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def release_unused_memory() -> None:
    """Hand back what Arrow's pool and glibc's heap hold for freed buffers (after dropping a large
    table, e.g. a superseded index version's in-memory copy)."""
    pa.default_memory_pool().release_unused()
    release_freed_memory()
