"""bench/ingest_profile.py: a real `lorechat ingest` profiled by role, and the timeline's sums."""

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.ingest_profile import ROLES, timeline
from bench.isolation import REPO
from bench.processes import CLOCK_TICKS


def test_an_ingest_profiled_by_process_role(tmp_path: Path) -> None:
    source = tmp_path / "docs"
    source.mkdir()
    for number in range(3):
        (source / f"note-{number}.md").write_text(
            f"# Note {number}\n\nThe orchard plan number {number} is written here in full.\n"
        )
    out = tmp_path / "profile.json"
    command = [sys.executable, "bench/ingest_profile.py", str(source), "--timeline", "2"]
    command += ["--json", str(out), "--home", str(tmp_path / "home")]
    finished = subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "LORECHAT_PARSE_WORKERS": "1"},
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["ingest"]["documents"]["new"] == 3
    # The pipeline's process, the encoder's child and the parser worker each did work.
    assert result["processes"]["pipeline"] == 1
    assert result["processes"]["encoder"] == 1
    assert result["processes"]["parser workers"] >= 1
    for role in ("pipeline", "encoder", "parser workers"):
        assert result["cpu_seconds"][role] > 0, role
    assert result["wall_seconds"] > 0
    assert "from s |" in finished.stdout
    assert (tmp_path / "home").is_dir()


def test_timeline_windows_sum_what_the_samples_add_up_to() -> None:
    tick = CLOCK_TICKS
    samples = [
        (0.0, {"pipeline": 0, "encoder": 0}, 0),
        (0.5, {"pipeline": tick, "encoder": 0}, tick),
        (1.5, {"pipeline": tick, "encoder": 3 * tick}, tick),
        (2.5, {"pipeline": 2 * tick, "encoder": 4 * tick, "parser workers": tick}, 3 * tick),
    ]
    lines = timeline(samples, window=2.0)
    assert lines[0].split("|")[1].strip() == ROLES[0]
    first = [float(cell) for cell in lines[1].split("|")[1:]]
    second = [float(cell) for cell in lines[2].split("|")[1:]]
    # pipeline, encoder, parser workers, other, idle
    assert first == [1.0, 3.0, 0.0, 0.0, 1.0]
    assert second == [1.0, 1.0, 1.0, 0.0, 2.0]
