"""`lorechat dev` end to end: an object dropped into an S3 source becomes searchable on its own.

The other automation tests evaluate the sensor in-process; this one runs the documented command
as a user would (webserver, daemon, code server, one run process per shard), against moto's S3
HTTP API, and only touches the outcome: the GraphQL run list and the index the alias names. It
catches what only the assembled system gets wrong: the managed instance config, the sensor's
default status and interval, credentials reaching the run processes through `dg.EnvVar`, and the
first version promoting itself.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from lorechat_pipeline.runner import Pipeline
from lorechat_pipeline.settings import load_settings
from tests.conftest import free_port

LORECHAT_BIN = Path(sys.executable).with_name("lorechat")
SENTENCE = (
    "The heliostat array on the northern ridge tracks the sun with forty-two mirrored panels "
    "and heats the molten salt tank to five hundred and sixty degrees."
)
DOCUMENT = "handbook/solar.md"
AWS_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
SERVER_START_SECONDS = 120
RUN_SUCCESS_SECONDS = 300

RUNS_QUERY = """
query IngestRuns($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId status tags { key value } } }
    ... on PythonError { message }
  }
}
"""
RUN_ERRORS_QUERY = """
query RunErrors($runId: ID!) {
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection {
      events {
        __typename
        ... on MessageEvent { message level stepKey }
        ... on ExecutionStepFailureEvent { error { message stack } }
        ... on RunFailureEvent { error { message stack } }
      }
    }
  }
}
"""
SENSOR_QUERY = """
query SensorTicks($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor {
      sensorState {
        status
        ticks(limit: 5) { status skipReason runKeys error { message } }
      }
    }
    ... on PythonError { message }
  }
}
"""


class DagsterDev:
    """A `lorechat dev` process group and the GraphQL endpoint of its webserver."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"
        self.log = log

    def log_tail(self, lines: int = 120) -> str:
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"`lorechat dev` exited with {self.process.returncode}")
            try:
                if requests.get(f"{self.url}/server_info", timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(1)
        pytest.fail(f"the Dagster webserver did not answer within {timeout:.0f} s")

    def graphql(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        response = requests.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=30
        )
        response.raise_for_status()
        payload: dict[str, Any] = response.json()
        assert not payload.get("errors"), payload["errors"]
        data: dict[str, Any] = payload["data"]
        return data

    def ingest_runs(self) -> list[dict[str, Any]]:
        result = self.graphql(RUNS_QUERY, {"filter": {"pipelineName": "ingest_job"}})
        runs = result["runsOrError"]
        assert runs["__typename"] == "Runs", runs
        results: list[dict[str, Any]] = runs["results"]
        return results

    def run_errors(self, run_id: str) -> str:
        logs = self.graphql(RUN_ERRORS_QUERY, {"runId": run_id})["logsForRun"]
        lines = []
        for event in logs.get("events", []):
            if event.get("error"):
                lines.append(f"{event['__typename']}: {event['error']['message']}")
            elif event.get("level") in ("ERROR", "CRITICAL"):
                lines.append(f"{event['__typename']} [{event.get('stepKey')}]: {event['message']}")
        return "\n".join(lines) or "(no error events)"

    def wait_for_successful_ingest_run(self, timeout: float) -> dict[str, Any]:
        """The first ingest_job run to succeed; fails at once with the error of a failed one."""
        deadline = time.monotonic() + timeout
        while True:
            runs = self.ingest_runs()
            for run in runs:
                if run["status"] == "FAILURE":
                    pytest.fail(
                        f"ingest run {run['runId']} failed:\n{self.run_errors(run['runId'])}"
                    )
                if run["status"] == "SUCCESS":
                    return run
            if time.monotonic() > deadline:
                pytest.fail(
                    f"no ingest_job run succeeded within {timeout:.0f} s; runs: {runs}; "
                    f"source_listing_sensor: {self.sensor_ticks()}"
                )
            time.sleep(2)

    def sensor_ticks(self) -> Any:
        selector = {
            "repositoryName": "__repository__",
            "repositoryLocationName": "lorechat_pipeline.definitions",
            "sensorName": "source_listing_sensor",
        }
        try:
            return self.graphql(SENSOR_QUERY, {"selector": selector})["sensorOrError"]
        except Exception as error:  # diagnostics only
            return repr(error)


@contextlib.contextmanager
def sigint_not_ignored() -> Iterator[None]:
    """`dagster dev` maps SIGTERM onto SIGINT's handler, so a SIGINT ignored since a shell's
    background job (and inherited across exec) would make it ignore SIGTERM too. A handled
    signal is reset to the default in the child, an ignored one is not."""
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_process_group(process: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM to the whole group (webserver, daemon, code server, run processes), SIGKILL to
    whatever is left after `grace` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        process.poll()  # reap the leader, or the group never looks empty
        if not group_alive(process.pid):
            break
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@contextlib.contextmanager
def lorechat_dev(env: dict[str, str], workdir: Path) -> Iterator[DagsterDev]:
    """`lorechat dev` in its own process group; the whole group is stopped on the way out and the
    log's tail printed when the block failed."""
    port = free_port()
    log = workdir / "dagster-dev.log"
    with log.open("wb") as out, sigint_not_ignored():
        process = subprocess.Popen(
            [str(LORECHAT_BIN), "dev", "--port", str(port)],
            env=env,
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    dev = DagsterDev(process, port, log)
    try:
        yield dev
    except BaseException:
        print(f"--- tail of {log} ---\n{dev.log_tail()}")
        raise
    finally:
        stopping = time.monotonic()
        stop_process_group(process)
        print(f"`lorechat dev` stopped in {time.monotonic() - stopping:.1f} s")


@pytest.mark.timeout(900)
def test_object_dropped_into_s3_becomes_searchable_through_the_sensor(
    tmp_path: Path, moto_endpoint: str, s3_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = f"lore-dev-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    home = tmp_path / "home"
    source = f"s3://{bucket}/docs"
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("LORECHAT_") and name != "DAGSTER_HOME"
    }
    env |= AWS_CREDENTIALS | {
        "LORECHAT_HOME": str(home),
        "LORECHAT_SOURCE": source,
        "LORECHAT_S3_ENDPOINT_URL": moto_endpoint,
        "LORECHAT_SENSOR_INTERVAL_SECONDS": "2",
        "LORECHAT_PARSE_WORKERS": "1",
        "HF_HUB_OFFLINE": "1",
        "DO_NOT_TRACK": "1",
    }

    # Read the way `lorechat search` does, in this process: the index the alias names.
    for name, value in AWS_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    pipeline = Pipeline.from_settings(
        load_settings(home=home, source=source, s3_endpoint_url=moto_endpoint)
    )

    started = time.monotonic()
    with lorechat_dev(env, tmp_path) as dev, contextlib.closing(pipeline):
        # The model loads here while the webserver starts, not after the run on the critical path.
        query = pipeline.embedder.embed_query(SENTENCE)
        dev.wait_until_ready(SERVER_START_SECONDS)
        print(f"webserver ready after {time.monotonic() - started:.1f} s")
        s3_client.put_object(
            Bucket=bucket,
            Key=f"docs/{DOCUMENT}",
            Body=f"# Solar field\n\n{SENTENCE}\n".encode(),
            ContentType="text/markdown",
        )
        run = dev.wait_for_successful_ingest_run(RUN_SUCCESS_SECONDS)
        print(f"ingest run {run['runId']} succeeded after {time.monotonic() - started:.1f} s")
        tags = {tag["key"]: tag["value"] for tag in run["tags"]}
        assert tags.get("lorechat/trigger") == "listing", tags
        assert tags.get("dagster/sensor_name") == "source_listing_sensor", tags

        hits = pipeline.open_current_index().search(query, k=3)
        assert hits, "the current index version holds no rows"
        assert hits[0].document == DOCUMENT, [(hit.document, hit.text) for hit in hits]
        assert "heliostat" in hits[0].text
