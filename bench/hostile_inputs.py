"""Hostile inputs: what each generated case costs and how it ends, for docs/reliability.md.

    .venv/bin/python bench/hostile_inputs.py [--scale N] [--skip-pipeline] [--backstops]

First each case alone through a parser worker with the default limits (the process the chunk
stage parses in): its outcome, wall time and the worker's peak resident memory while parsing it
(VmHWM, reset before each document; a warm idle worker holds ~320 MB). A case larger than
LORECHAT_MAX_DOCUMENT_BYTES is never read: observation quarantines it from its size. Then all of
them beside normal documents through one real pipeline run on the local default: each document's
outcome, the run's time and the peak resident memory of the pipeline process (which holds the
embedding model). `--backstops` also parses the bombs and the long line with the content limits
lifted, to show what the worker's memory limit and deadline do alone. Prints markdown tables.
`--scale` multiplies the bombs and sizes (the slow test uses 16).
"""

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lorechat_pipeline.core.parsing import (
    ChunkingOptions,
    DocumentRejected,
    ParseLimits,
    ParserPool,
)
from lorechat_pipeline.runner import Pipeline
from lorechat_pipeline.settings import load_settings
from tests.pipeline.conftest import HTML, MARKDOWN, TEXT
from tests.reliability.hostile_inputs import HostileCase, hostile_cases

MIB = 1024 * 1024


def _peak_rss_mb(pid: int | None) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def _reset_peak(pid: int | None) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def per_case(cases: list[HostileCase], folder: Path) -> list[tuple[str, str, str, str, str]]:
    settings = load_settings()
    rows = []
    with ParserPool(
        ChunkingOptions(), workers=1, timeout_seconds=settings.parse_timeout_seconds
    ) as pool:
        pool.parse(b"# warm\n\nup", "warm.md")
        for case in cases:
            path = folder / case.name
            size = path.stat().st_size
            if size > settings.max_document_bytes:
                rows.append((case.name, case.describe, "too_large (never read)", "0.00", "–"))
                continue
            pid = pool._pool[0].process.pid
            _reset_peak(pid)
            started = time.monotonic()
            [(_, outcome)] = list(pool.map([(case.name, path.read_bytes(), case.name)]))
            seconds = time.monotonic() - started
            replaced = pool._pool[0].process.pid != pid
            peak = "(worker replaced)" if replaced else f"{_peak_rss_mb(pid):.0f}"
            if isinstance(outcome, DocumentRejected):
                result = f"quarantined: {outcome.reason}"
            else:
                result = f"indexed ({len(outcome)} chunks)"
            rows.append((case.name, case.describe, result, f"{seconds:.2f}", peak))
    return rows


def backstops(cases: list[HostileCase], folder: Path, timeout: float) -> list[str]:
    """The cases the content limits catch, with those limits lifted: what the worker's memory
    limit and deadline do on their own."""
    lifted = ParseLimits(
        max_inflated_bytes=2**62, max_compression_ratio=1e12, max_characters=2**62, max_chunks=2**62
    )
    lines = []
    with ParserPool(ChunkingOptions(), workers=1, timeout_seconds=timeout, limits=lifted) as pool:
        pool.parse(b"# warm\n\nup", "warm.md")
        for case in cases:
            if "decompression_bomb" not in case.expected and "too_much_text" not in case.expected:
                continue
            started = time.monotonic()
            data = (folder / case.name).read_bytes()
            [(_, outcome)] = list(pool.map([(case.name, data, case.name)]))
            seconds = time.monotonic() - started
            if isinstance(outcome, DocumentRejected):
                result = f"quarantined: {outcome.reason} ({outcome.detail[:70]})"
            else:
                result = f"indexed ({len(outcome)} chunks)"
            lines.append(f"| `{case.name}` | {result} | {seconds:.1f} |")
    return lines


def pipeline_run(cases: list[HostileCase], folder: Path, home: Path) -> tuple[list[str], str]:
    source = home / "source"
    (source / "hostile").mkdir(parents=True)
    for case in cases:
        os.link(folder / case.name, source / "hostile" / case.name)
    for name, text in {
        "energy/solar.md": MARKDOWN,
        "kitchen/tea.html": HTML,
        "bikes.txt": TEXT,
    }.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(text)
    pipeline = Pipeline.from_settings(
        load_settings(home=home / "home", source=str(source), parse_workers=1)
    )
    try:
        started = time.monotonic()
        summary = pipeline.ingest()
        seconds = time.monotonic() - started
        indexed = set(pipeline.open_index().rows(None, ["document"]).column("document").to_pylist())
        quarantined = {entry.document: entry.reason for entry in pipeline.quarantine()}
    finally:
        pipeline.close()
    documents = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
    lines = [
        f"| `{document}` | "
        + (
            "indexed"
            if document in indexed
            else f"quarantined: {quarantined.get(document, 'LOST')}"
        )
        + " |"
        for document in documents
    ]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    total = (
        f"{len(documents)} documents in {seconds:.1f} s ({summary.quarantined} quarantined, "
        f"{len(indexed)} indexed, {len(documents) - len(indexed) - len(quarantined)} lost); "
        f"peak RSS of the pipeline process {peak:.0f} MB"
    )
    return lines, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument(
        "--backstops",
        action="store_true",
        help="also parse the bombs and the long line with the content limits lifted",
    )
    parser.add_argument("--backstop-timeout", type=float, default=120.0)
    args = parser.parse_args()
    cases = hostile_cases(scale=args.scale)
    with tempfile.TemporaryDirectory(prefix="hostile-") as temporary:
        folder = Path(temporary) / "cases"
        folder.mkdir()
        print("| input | what | outcome | time (s) | worker peak RSS (MB) | file size |")
        print("|---|---|---|---:|---:|---:|")
        for case in cases:
            started = time.monotonic()
            case.make(folder / case.name)
            case_seconds = time.monotonic() - started
            print(f"<!-- generated {case.name} in {case_seconds:.1f} s -->", file=sys.stderr)
        for name, describe, outcome, seconds, peak in per_case(cases, folder):
            size = (folder / name).stat().st_size
            print(f"| `{name}` | {describe} | {outcome} | {seconds} | {peak} | {size:,} |")
        if args.backstops:
            print("\n| input, content limits lifted | outcome | time (s) |\n|---|---|---:|")
            print("\n".join(backstops(cases, folder, args.backstop_timeout)))
        if not args.skip_pipeline:
            lines, total = pipeline_run(cases, folder, Path(temporary))
            print("\n| document | outcome through the pipeline |\n|---|---|")
            print("\n".join(lines))
            print(f"\n{total}")


if __name__ == "__main__":
    main()
