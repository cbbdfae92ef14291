"""Hostile and broken documents through the real pipeline (a folder source), beside normal ones.

Every input ends indexed or quarantined with a reason, within bounded time and memory; the run
goes on and loses nothing else. The figures are in docs/reliability.md (bench/hostile_inputs.py).
"""

import time
from pathlib import Path

import pytest

from lorechat_pipeline.resources import ingestion_config
from tests.pipeline.conftest import HTML, MARKDOWN, TEXT, PipelineFactory, write
from tests.reliability.hostile_inputs import GIB, HostileCase, disk_usage, hostile_cases
from tests.reliability.test_hostile_keys import LONG_PATH, NOTE

NORMAL = {
    "energy/solar.md": MARKDOWN,
    "kitchen/tea.html": HTML,
    "bikes.txt": TEXT,
    # Awkward names a folder can hold (the S3-only ones are in test_hostile_keys.py).
    "with spaces/a file  name .md": NOTE,
    "ünïcødé/文書 ☃ résumé.md": NOTE,
    "n" * 251 + ".md": NOTE,  # a 255-byte file name, the most a folder holds
    LONG_PATH: NOTE,  # 1,024 characters
}
# Generous for 2 shared cores: a clean run of the normal documents alone takes ~20 s.
RUN_SECONDS = 180
MEMORY_LIMIT_MB = 2048


def peak_rss_kb(pid: int | None) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])


def run_hostile_corpus(
    tmp_path: Path, make_pipeline: PipelineFactory, cases: list[HostileCase]
) -> None:
    source = tmp_path / "source"
    for name, text in NORMAL.items():
        write(source, name, text)
    for case in cases:
        (source / "hostile").mkdir(parents=True, exist_ok=True)
        case.make(source / "hostile" / case.name)
    files = {p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file()}

    pipeline = make_pipeline(source, parse_memory_limit_mb=MEMORY_LIMIT_MB)
    started = time.monotonic()
    summary = pipeline.ingest()
    seconds = time.monotonic() - started

    index = pipeline.open_index()
    indexed = set(index.rows(None, ["document"]).column("document").to_pylist())
    quarantined = {entry.document: entry for entry in pipeline.quarantine()}
    outcomes = {
        case.name: "indexed"
        if f"hostile/{case.name}" in indexed
        else quarantined[f"hostile/{case.name}"].reason
        for case in cases
    }
    print(f"{seconds:.1f}s", outcomes)

    assert set(NORMAL) <= indexed, "a normal document was lost"
    assert indexed | set(quarantined) == files, "a document is neither indexed nor quarantined"
    assert not indexed & set(quarantined)
    assert all(entry.reason and entry.detail for entry in quarantined.values())
    assert summary.quarantined == len(quarantined)
    for case in cases:
        assert outcomes[case.name] in case.expected, quarantined.get(f"hostile/{case.name}")
    assert seconds < RUN_SECONDS

    # The text documents with NUL bytes and broken UTF-8 are indexed clean.
    texts = index.rows("document LIKE 'hostile/%'", ["document", "text"]).to_pylist()
    assert texts
    assert all("\x00" not in row["text"] for row in texts)
    assert any("tide tables" in row["text"] for row in texts)

    # No worker grew past its limit (RLIMIT_AS bounds address space, so resident memory too).
    workers = [w for pool in ingestion_config._shared_pools.values() for w in pool._pool]
    for worker in workers:
        assert peak_rss_kb(worker.process.pid) < MEMORY_LIMIT_MB * 1024

    # The run is stable: nothing is parsed again, nothing flips.
    assert pipeline.ingest().shards_run == []


def test_hostile_inputs_are_quarantined_and_nothing_else_is_lost(
    tmp_path: Path, make_pipeline: PipelineFactory
) -> None:
    cases = hostile_cases()
    run_hostile_corpus(tmp_path, make_pipeline, cases)
    sparse = tmp_path / "source" / "hostile" / "sparse.txt"
    assert sparse.stat().st_size == GIB
    assert disk_usage(sparse) < 1024 * 1024


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_bigger_hostile_inputs(tmp_path: Path, make_pipeline: PipelineFactory) -> None:
    """16 GiB bombs, a 16 GiB sparse file, 1.6 million levels of HTML, 160,000 empty pages."""
    run_hostile_corpus(tmp_path, make_pipeline, hostile_cases(scale=16))
