"""Object keys no folder can hold (`..` and `.` segments, a 1,024-character name) and one of
spaces and unicode, on moto's S3 server: each document is indexed under its own
key, nothing is read or written outside the source prefix, nothing else is lost. (The names a
folder can hold are in test_hostile_inputs.py.)"""

from pathlib import Path
from typing import Any

import pytest

from tests.pipeline.conftest import TEXT, PipelineFactory

NOTE = "Harbour notes: the ferry leaves at nine and returns at five, weather permitting.\n"
LONG_SEGMENT = "k" * 1_021 + ".md"  # one 1,024-character segment: more than any file name
# A 1,024-character path a folder can hold: segments under the 255-byte name limit.
LONG_PATH = "/".join(["d" * 200] * 4) + "/" + "n" * (1_024 - 4 * 201 - 3) + ".md"

S3_KEYS = [
    "../escape.md",
    "a/../../escape-twice.md",
    "./dot/./here.md",
    "ünïcødé with spaces/文書 ☃ a  résumé 📄.md",
    LONG_SEGMENT,
]


@pytest.fixture
def bucket(s3_client: Any, tmp_path: Path) -> str:
    name = "keys-" + tmp_path.name.lower().replace("_", "-")[-20:].strip("-")
    s3_client.create_bucket(Bucket=name)
    return name


def indexed_documents(pipeline: Any) -> set[str]:
    rows = pipeline.open_index().rows(None, ["document"])
    return set(rows.column("document").to_pylist())


def test_hostile_s3_keys_are_indexed_under_their_own_key(
    s3_client: Any, bucket: str, moto_endpoint: str, make_pipeline: PipelineFactory
) -> None:
    assert len(LONG_SEGMENT) == len(LONG_PATH) == 1_024
    # (Each key is its own shard, hence its own run: the list is kept short for time.)
    for key in S3_KEYS:
        s3_client.put_object(Bucket=bucket, Key=f"kb/{key}", Body=f"{key}\n\n{NOTE}".encode())
    s3_client.put_object(Bucket=bucket, Key="kb/bikes.txt", Body=TEXT.encode())
    s3_client.put_object(Bucket=bucket, Key="outside.md", Body=b"# Outside\n\nNot in the prefix.")
    stored = {o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert {f"kb/{key}" for key in S3_KEYS} <= stored  # S3 keeps `..` as it is

    pipeline = make_pipeline(f"s3://{bucket}/kb", s3_endpoint_url=moto_endpoint)
    summary = pipeline.ingest()

    assert pipeline.quarantine() == []
    assert summary.quarantined == 0
    assert indexed_documents(pipeline) == {*S3_KEYS, "bikes.txt"}
    # Nothing was written outside the pipeline's own stores, nor read outside the prefix.
    assert {o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket)["Contents"]} == stored
    assert pipeline.ingest().shards_run == []
