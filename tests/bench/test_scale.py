"""The scale benchmark end to end on a small size: LanceDB and the serving copy both measured."""

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT


def test_scale_measures_lancedb_and_the_in_memory_copy(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    subprocess.run(
        [sys.executable, "-m", "bench.scale", "--rows", "3000", "--queries", "20", "--out", out],
        cwd=REPO_ROOT,
        check=True,
        timeout=300,
    )
    result = json.loads(out.read_text())
    assert result["rows"] == 3000
    assert result["recall_at_10"] >= 0.95
    copy = result["resident_copy"]
    assert copy["lists"] == 1  # below the inverted file's threshold: every vector scored
    assert copy["recall_at_10"] == 1.0
    assert copy["query_p99_ms"] >= copy["query_p50_ms"] > 0
