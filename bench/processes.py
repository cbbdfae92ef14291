"""A benchmark step's process tree, read from Linux /proc: its members, their CPU time and
resident memory, and an end for all of them (some start sessions of their own, which a kill of
the step's process group misses: Dagster's compute-log `tail` processes)."""

import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcessStat:
    parent: int
    own_cpu_ticks: int  # utime stime
    cpu_ticks: int  # utime stime cutime cstime: with what its reaped children used
    resident_pages: int


def process_stats() -> dict[int, ProcessStat]:
    stats: dict[int, ProcessStat] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # exited while listed
            continue
        # The command name is in parentheses and may hold spaces: fields start after it.
        fields = text[text.rindex(")") + 2 :].split()
        stats[int(stat.parent.name)] = ProcessStat(
            parent=int(fields[1]),
            own_cpu_ticks=int(fields[11]) + int(fields[12]),
            cpu_ticks=sum(int(value) for value in fields[11:15]),
            resident_pages=int(fields[21]),
        )
    return stats


def descendants(root: int, stats: dict[int, ProcessStat] | None = None) -> list[int]:
    """The running descendants of `root` (not `root` itself), parents before children."""
    stats = process_stats() if stats is None else stats
    children: dict[int, list[int]] = {}
    for pid, stat in stats.items():
        children.setdefault(stat.parent, []).append(pid)
    found, frontier = [], [root]
    while frontier:
        below = children.get(frontier.pop(), [])
        found += below
        frontier += below
    return found


def descendants_cpu_seconds(root: int) -> float:
    stats = process_stats()
    return sum(stats[pid].cpu_ticks for pid in descendants(root, stats)) / CLOCK_TICKS


def tree_resident_mb(root: int) -> float:
    """Resident memory of `root` and its descendants, summed: an upper bound on what the tree
    holds, since pages they share (the interpreter, libraries) count once per process."""
    stats = process_stats()
    members = [root, *descendants(root, stats)]
    pages = sum(stats[pid].resident_pages for pid in members if pid in stats)
    return pages * PAGE_BYTES / 2**20


def kill_tree(root: int) -> None:
    """SIGKILL `root`'s process group and every descendant, wherever their sessions are."""
    members = descendants(root)  # read before the kill: orphans lose their place in the tree
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(root, signal.SIGKILL)
    for pid in [root, *members]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
