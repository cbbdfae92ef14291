"""Event mode: S3 notifications → SQS (moto's server) → the event sensor → shard runs that look
up only the notified keys, never listing the bucket."""

from pathlib import Path
from typing import Any

import dagster as dg

from lorechat_pipeline.core.ids import SHARD_COUNT, shard_of
from lorechat_pipeline.defs.automation.requests import (
    PARTITION_RANGE_END_TAG,
    PARTITION_RANGE_START_TAG,
)
from lorechat_pipeline.defs.automation.sensors import build_source_event_sensor
from lorechat_pipeline.runner import Pipeline
from lorechat_pipeline.settings import load_settings
from tests.pipeline.conftest import MARKDOWN, TEXT


def evaluate(pipeline: Pipeline) -> list[dg.RunRequest]:
    sensor = build_source_event_sensor(pipeline.settings)
    resources = {name: pipeline.definitions.resources[name] for name in ("source", "event_queue")}
    with dg.build_sensor_context(resources=resources) as context:
        result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    return list(result.run_requests or [])


def run(pipeline: Pipeline, request: dg.RunRequest, instance: dg.DagsterInstance) -> None:
    # As the daemon launches it: a single shard by partition key, several by the range tags.
    result = pipeline.definitions.resolve_job_def("ingest_job").execute_in_process(
        partition_key=request.partition_key,
        run_config=request.run_config,
        instance=instance,
        tags=request.tags,
    )
    assert result.success
    observed = result.asset_materializations_for_node("raw_documents")[0].metadata
    assert observed["mode"].value == "events"


def indexed_documents(pipeline: Pipeline) -> set[str]:
    index = pipeline.open_current_index()
    return set(index.rows(None, ["document"]).column("document").to_pylist())


def test_event_sensor_turns_notifications_into_runs_of_the_notified_keys(
    tmp_path: Path,
    s3_client: Any,
    sqs_client: Any,
    queue_url: str,
    notifying_bucket: str,
    moto_endpoint: str,
    embedder: Any,
) -> None:
    bucket = notifying_bucket
    # Uploaded before anyone listens for it: only a listing could find this one.
    s3_client.put_object(Bucket=bucket, Key="docs/before-events.txt", Body=TEXT.encode())
    sqs_client.purge_queue(QueueUrl=queue_url)

    settings = load_settings(
        home=tmp_path / "home",
        source=f"s3://{bucket}/docs",
        s3_endpoint_url=moto_endpoint,
        sqs_queue_url=queue_url,
        parse_workers=1,
    )
    pipeline = Pipeline.from_settings(settings)
    assert "source_event_sensor" in {s.name for s in pipeline.definitions.sensors}
    instance = dg.DagsterInstance.ephemeral()

    s3_client.put_object(Bucket=bucket, Key="docs/energy/solar panels.md", Body=MARKDOWN.encode())
    s3_client.put_object(Bucket=bucket, Key="docs/notes/tea+milk.txt", Body=b"Milk tea notes.")
    s3_client.put_object(Bucket=bucket, Key="outside/ignored.md", Body=b"not in the source")

    requests = evaluate(pipeline)
    expected_shards = {
        shard_of("energy/solar panels.md", SHARD_COUNT),
        shard_of("notes/tea+milk.txt", SHARD_COUNT),
    }
    # One run for both shards (a range of partitions), looking up just the notified keys.
    (request,) = requests
    assert set(request.tags["lorechat/shards"].split(",")) == expected_shards
    assert request.tags[PARTITION_RANGE_START_TAG] == min(expected_shards)
    assert request.tags[PARTITION_RANGE_END_TAG] == max(expected_shards)
    keys = request.run_config["ops"]["raw_documents"]["config"]["keys"]
    assert keys == ["energy/solar panels.md", "notes/tea+milk.txt"]  # URL-decoded, in the source
    assert evaluate(pipeline) == []  # the queue was drained

    for request in requests:
        run(pipeline, request, instance)
    assert indexed_documents(pipeline) == {"energy/solar panels.md", "notes/tea+milk.txt"}

    s3_client.delete_object(Bucket=bucket, Key="docs/energy/solar panels.md")
    deletion = evaluate(pipeline)
    assert [r.partition_key for r in deletion] == [shard_of("energy/solar panels.md", SHARD_COUNT)]
    assert deletion[0].run_config["ops"]["raw_documents"]["config"]["keys"] == [
        "energy/solar panels.md"
    ]
    for request in deletion:
        run(pipeline, request, instance)
    assert indexed_documents(pipeline) == {"notes/tea+milk.txt"}


def test_a_queue_switches_the_sensors_to_event_mode(tmp_path: Path) -> None:
    def sensors(queue: str | None) -> dict[str, dg.SensorDefinition]:
        definitions = Pipeline.from_settings(load_settings(home=tmp_path, sqs_queue_url=queue))
        return {s.name: s for s in definitions.definitions.sensors}

    polling = sensors(None)
    assert "source_event_sensor" not in polling
    assert polling["source_listing_sensor"].default_status == dg.DefaultSensorStatus.RUNNING
    events = sensors("http://127.0.0.1:1/000000000000/q")
    assert events["source_event_sensor"].default_status == dg.DefaultSensorStatus.RUNNING
    assert events["source_listing_sensor"].default_status == dg.DefaultSensorStatus.STOPPED
