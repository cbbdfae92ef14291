"""The metrics the deployment's dashboard and alarms read: documents processed and quarantined per
chunking step, and failed runs, as CloudWatch Embedded Metric Format lines on stdout."""

import json
from pathlib import Path

import dagster as dg
import pytest

from lorechat_pipeline.core.metrics import (
    DOCUMENTS_PROCESSED,
    DOCUMENTS_QUARANTINED,
    NAMESPACE,
    RUN_FAILURES,
)
from lorechat_pipeline.definitions import build_definitions
from lorechat_pipeline.defs.automation.sensors import build_run_failure_metrics_sensor
from lorechat_pipeline.settings import load_settings
from tests.pipeline.conftest import MARKDOWN, TEXT, PipelineFactory, write


def emf_documents(output: str) -> list[dict[str, object]]:
    documents = []
    for line in output.splitlines():
        if line.startswith('{"_aws"'):
            document = json.loads(line)
            (directive,) = document["_aws"]["CloudWatchMetrics"]
            assert directive["Namespace"] == NAMESPACE
            documents.append(document)
    return documents


def test_chunking_reports_processed_and_quarantined_documents(
    tmp_path: Path, make_pipeline: PipelineFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "source"
    write(source, "energy/solar.md", MARKDOWN)
    write(source, "bikes.txt", TEXT)
    write(source, "empty.txt", "")
    pipeline = make_pipeline(source, cloudwatch_metrics=True)
    capsys.readouterr()
    pipeline.ingest()
    documents = emf_documents(capsys.readouterr().out)
    assert documents, "no EMF line was printed"
    assert sum(int(str(d[DOCUMENTS_PROCESSED])) for d in documents) == 2
    assert sum(int(str(d[DOCUMENTS_QUARANTINED])) for d in documents) == 1

    # Nothing changed, nothing processed; and off by default on the local default.
    pipeline.ingest()
    again = emf_documents(capsys.readouterr().out)
    assert sum(int(str(d[DOCUMENTS_PROCESSED])) for d in again) == 0
    quiet = make_pipeline(source, home=tmp_path / "quiet")
    quiet.ingest()
    assert emf_documents(capsys.readouterr().out) == []


def test_the_failure_sensor_runs_where_metrics_are_emitted(tmp_path: Path) -> None:
    def sensor_names(**overrides: object) -> set[str]:
        definitions = build_definitions(load_settings(home=tmp_path, **overrides))
        return {sensor.name for sensor in definitions.sensors or []}

    assert "run_failure_metrics_sensor" not in sensor_names()
    assert "run_failure_metrics_sensor" in sensor_names(cloudwatch_metrics=True)
    in_aws = {
        "environment": "aws",
        "source": "s3://kb-source/docs",
        "processed": "s3://kb-processed/",
        "index_uri": "s3://kb-index/index",
        "vector_store": "lancedb",
    }
    assert load_settings(home=tmp_path, **in_aws).emits_cloudwatch_metrics
    assert not load_settings(
        home=tmp_path, cloudwatch_metrics=False, **in_aws
    ).emits_cloudwatch_metrics


def test_a_failed_run_counts_one_run_failure(capsys: pytest.CaptureFixture[str]) -> None:
    @dg.op
    def breaks() -> None:
        raise RuntimeError("a failure for the metric")

    @dg.job
    def failing_job() -> None:
        breaks()

    instance = dg.DagsterInstance.ephemeral()
    result = failing_job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_metrics_sensor",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
    ).for_run_failure()
    capsys.readouterr()
    build_run_failure_metrics_sensor()(context)
    (document,) = emf_documents(capsys.readouterr().out)
    assert document[RUN_FAILURES] == 1
