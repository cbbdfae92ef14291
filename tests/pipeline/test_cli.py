"""`lorechat` as users call it: JSON outputs of ingest, search and status."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lorechat_pipeline.cli import app
from tests.pipeline.conftest import write


@pytest.fixture
def cli_env(tmp_path: Path, embedder: Any) -> dict[str, str]:
    return {"LORECHAT_HOME": str(tmp_path / "home"), "LORECHAT_PARSE_WORKERS": "1"}


def invoke(env: dict[str, str], *args: str) -> Any:
    result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_ingest_search_status_json(corpus: Path, cli_env: dict[str, str]) -> None:
    write(corpus, "broken.pdf", b"%PDF-1.4 truncated")
    env = {**cli_env, "LORECHAT_SOURCE": str(corpus)}
    summary = invoke(env, "ingest", "--json")
    assert set(summary) == {"documents", "chunks", "seconds", "promotion"}
    assert summary["promotion"] is None  # the first version is current at once: no promotion
    assert summary["documents"] == {
        "new": 4,
        "changed": 0,
        "unchanged": 0,
        "deleted": 0,
        "quarantined": 1,
    }
    assert summary["chunks"]["written"] > 0
    assert summary["chunks"]["deleted"] == 0
    assert isinstance(summary["seconds"], float)

    again = invoke(env, "ingest", "--json")
    assert again["documents"]["unchanged"] == 4
    assert again["chunks"]["written"] == 0

    found = invoke(env, "search", "fixing a punctured inner tube", "-k", "2", "--json")
    assert len(found["hits"]) == 2
    top = found["hits"][0]
    assert {"chunk_id", "document", "score", "text"} <= set(top)
    assert top["document"] == "bikes.txt"
    assert top["chunk_id"].split("#")[0]
    assert 0 < top["score"] <= 1.0001

    status = invoke(env, "status", "--json")
    assert status["documents"] == 4
    assert status["chunks"] >= 3
    assert status["quarantined"] == [
        {
            "document": "broken.pdf",
            "reason": "corrupt",
            "detail": status["quarantined"][0]["detail"],
        }
    ]
    assert status["index"]["manifest"]["embedding_dimension"] == 384


def test_ingest_argument_overrides_the_configured_source(
    corpus: Path, cli_env: dict[str, str]
) -> None:
    summary = invoke(cli_env, "ingest", str(corpus), "--json")
    assert summary["documents"]["new"] == 3


def test_search_reports_a_missing_index_clearly(cli_env: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["search", "anything"], env=cli_env)
    assert result.exit_code == 1
    assert "lorechat ingest" in result.output
    empty = CliRunner().invoke(app, ["search", "  "], env=cli_env)
    assert empty.exit_code == 2
    assert "empty" in empty.output


def test_console_script_is_installed(tmp_path: Path, corpus: Path) -> None:
    lorechat = Path(sys.executable).parent / "lorechat"
    assert lorechat.exists(), "the `lorechat` console script must be on the venv's PATH"
    env = {**os.environ, "LORECHAT_HOME": str(tmp_path / "cli-home"), "LORECHAT_PARSE_WORKERS": "1"}
    done = subprocess.run(
        [str(lorechat), "ingest", str(corpus), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["documents"]["new"] == 3
    assert (tmp_path / "cli-home" / "index").is_dir()
    assert (tmp_path / "cli-home" / "dagster").is_dir()  # runs are visible in the Dagster UI
