"""A benchmark step's process tree, read from Linux /proc: its members, their CPU time and
resident memory, and an end for all of them (some start sessions of their own, which a kill of
the step's process group misses: Dagster's compute-log `tail` processes)."""

import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcessStat:
    parent: int
    own_cpu_ticks: int  # utime stime
    cpu_ticks: int  # utime stime cutime cstime: with what its reaped children used


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


def resident_kb(pid: int) -> tuple[int, int] | None:
    """(resident now, its high-water mark) of `pid` in kB; None once it is gone or a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if "VmHWM" not in fields:  # a zombie, or a kernel thread: no memory of its own
        return None
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


class TreeMemory:
    """Peak memory of a process tree, sampled: the largest high-water mark of any one process
    (the kernel's VmHWM, exact for what a process held since its exec) and the largest sum of
    the members' resident sizes at one moment (an upper bound on what the tree held: pages they
    share, the interpreter and libraries, count once per process).

    Not wait4's ru_maxrss: Linux records there the high-water mark of the memory a child had
    before its exec, which after fork or vfork is its parent's, so a small step started by a
    large process reports the large one's size."""

    def __init__(self, root: int, root_command: str):
        self.root = root
        self.root_command = root_command
        self.largest_process_mb: float | None = None  # None: never seen running its program
        self.whole_tree_mb: float | None = None

    def sample_root(self) -> None:
        """The root's high-water mark alone (cheap: one read), once it runs its own program."""
        if self._running_its_program():
            self._note_peak(resident_kb(self.root))

    def sample_tree(self) -> None:
        if not self._running_its_program():
            return
        members = [self.root, *descendants(self.root)]
        total_kb = 0
        for pid in members:
            memory = resident_kb(pid)
            self._note_peak(memory)
            total_kb += memory[0] if memory else 0
        self.whole_tree_mb = max(self.whole_tree_mb or 0.0, total_kb / 1024)

    def _note_peak(self, memory: tuple[int, int] | None) -> None:
        if memory:
            self.largest_process_mb = max(self.largest_process_mb or 0.0, memory[1] / 1024)

    def _running_its_program(self) -> bool:
        try:
            command = Path(f"/proc/{self.root}/cmdline").read_bytes()
        except OSError:
            return False
        return self.root_command.encode() in command


def kill_tree(root: int) -> None:
    """SIGKILL `root`'s process group and every descendant, wherever their sessions are."""
    members = descendants(root)  # read before the kill: orphans lose their place in the tree
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(root, signal.SIGKILL)
    for pid in [root, *members]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
