"""The whole path on S3: source, processed store and LanceDB index, through moto's HTTP server."""

from pathlib import Path
from typing import Any

import pytest

from tests.pipeline.conftest import HTML, MARKDOWN, TEXT, PipelineFactory


@pytest.fixture
def buckets(s3_client: Any, tmp_path: Path) -> dict[str, str]:
    suffix = tmp_path.name.lower().replace("_", "-")[-20:].strip("-")
    names = {"source": f"src-{suffix}", "processed": f"proc-{suffix}", "index": f"idx-{suffix}"}
    for bucket in names.values():
        s3_client.create_bucket(Bucket=bucket)
    s3_client.put_bucket_versioning(
        Bucket=names["source"], VersioningConfiguration={"Status": "Enabled"}
    )
    return names


def test_ingest_from_s3_tracks_changes_and_deletions(
    s3_client: Any, buckets: dict[str, str], moto_endpoint: str, make_pipeline: PipelineFactory
) -> None:
    source = buckets["source"]
    s3_client.put_object(Bucket=source, Key="kb/energy/solar.md", Body=MARKDOWN.encode())
    s3_client.put_object(Bucket=source, Key="kb/kitchen/tea.html", Body=HTML.encode())
    s3_client.put_object(Bucket=source, Key="kb/bikes.txt", Body=TEXT.encode())
    s3_client.put_object(Bucket=source, Key="kb/bikes.txt.metadata.json", Body=b'{"shop": "north"}')
    s3_client.put_object(Bucket=source, Key="elsewhere/ignored.txt", Body=b"outside the prefix")
    pipeline = make_pipeline(
        f"s3://{source}/kb",
        processed=f"s3://{buckets['processed']}/lorechat",
        index_uri=f"s3://{buckets['index']}/lancedb",
        s3_endpoint_url=moto_endpoint,
    )
    first = pipeline.ingest()
    assert first.as_json()["documents"]["new"] == 3
    index = pipeline.open_index()
    documents = set(index.rows(None, ["document"]).column("document").to_pylist())
    assert documents == {"energy/solar.md", "kitchen/tea.html", "bikes.txt"}
    versions = index.rows("document = 'bikes.txt'", ["source_version", "user_metadata"]).to_pylist()
    head = s3_client.head_object(Bucket=source, Key="kb/bikes.txt")
    assert {row["source_version"] for row in versions} == {head["VersionId"]}
    assert {row["user_metadata"] for row in versions} == {'{"shop": "north"}'}
    processed_keys = s3_client.list_objects_v2(Bucket=buckets["processed"])["KeyCount"]
    assert processed_keys > 0
    assert s3_client.list_objects_v2(Bucket=buckets["index"])["KeyCount"] > 0

    assert pipeline.ingest().shards_run == []

    s3_client.put_object(Bucket=source, Key="kb/bikes.txt", Body=b"Chain lubrication every 300 km.")
    s3_client.delete_object(Bucket=source, Key="kb/kitchen/tea.html")
    summary = pipeline.ingest()
    assert (
        summary.as_json()["documents"]["changed"],
        summary.as_json()["documents"]["deleted"],
    ) == (1, 1)
    index = pipeline.open_index()
    texts = index.rows(None, ["document", "text"]).to_pylist()
    assert {row["document"] for row in texts} == {"energy/solar.md", "bikes.txt"}
    assert any(
        "Chain lubrication" in row["text"] for row in texts if row["document"] == "bikes.txt"
    )
    assert not any("inner tube" in row["text"] for row in texts)
