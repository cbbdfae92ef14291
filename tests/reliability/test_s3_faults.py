"""S3 failures injected by a real HTTP fault proxy in front of moto's server (s3_fault_proxy.py).

The source bucket and the processed store go through the proxy; the index is a LanceDB folder.
Transient faults are retried and the index is the one a clean run builds; a run that gives up
leaves the index as it was and quarantines nothing (an outage is not a bad document); a listing
that comes back empty or half empty is refused by the deletion guard.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lorechat_pipeline.core.ids import SHARD_COUNT, shard_of
from lorechat_pipeline.core.storage import ObjectUnavailable, S3ObjectStore, S3Retries, s3_client
from lorechat_pipeline.runner import IngestFailed, Pipeline
from lorechat_pipeline.settings import load_settings
from tests.pipeline.conftest import HTML, MARKDOWN, TEXT, PipelineFactory, index_snapshot
from tests.reliability.s3_fault_proxy import FaultKind, S3FaultProxy

# One collection ("notes"), so a listing missing documents is a share of one collection; one
# shard (shard-011), so a run is one Dagster run.
CORPUS = {"notes/solar-panels.md": MARKDOWN, "notes/brewing.html": HTML, "notes/bikes.txt": TEXT}
OLD_BIKES = "Bicycle notes\n\nChain lubrication every 300 km keeps the drivetrain quiet.\n"
TRANSIENT: list[FaultKind] = ["internal_error", "slow_down", "reset", "truncate"]
ATTEMPTS = 3  # per S3 request, the first included: the backoff stays around a second
SKIPS = [0, 1, 3, 4]  # matching requests let through before each kind's fault


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[S3FaultProxy]:
    with S3FaultProxy(moto_endpoint) as running:
        yield running


def make_buckets(s3: Any, name: str) -> tuple[str, str]:
    source, processed = f"src-{name}", f"proc-{name}"
    for bucket in (source, processed):
        s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=source, VersioningConfiguration={"Status": "Enabled"})
    return source, processed


def put_corpus(s3: Any, bucket: str, corpus: dict[str, str]) -> None:
    for key, text in corpus.items():
        s3.put_object(Bucket=bucket, Key=f"kb/{key}", Body=text.encode())


def bucket_name(tmp_path: Path) -> str:
    return tmp_path.name.lower().replace("_", "-")[-20:].strip("-")


def on_s3(make_pipeline: PipelineFactory, endpoint: str, source: str, processed: str) -> Pipeline:
    return make_pipeline(
        f"s3://{source}/kb",
        processed=f"s3://{processed}/lorechat",
        s3_endpoint_url=endpoint,
        s3_max_attempts=ATTEMPTS,
        deletion_guard_min_documents=2,
    )


@pytest.fixture(scope="module")
def clean_index(
    moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory, embedder: Any
) -> dict[str, tuple[str, str, tuple[float, ...]]]:
    """The index a clean run (straight to moto, no proxy) builds of CORPUS."""
    import boto3

    home = tmp_path_factory.mktemp("clean")
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    source, processed = make_buckets(s3, "clean-reference")
    put_corpus(s3, source, CORPUS)
    settings = load_settings(
        home=home / "home",
        source=f"s3://{source}/kb",
        processed=f"s3://{processed}/lorechat",
        s3_endpoint_url=moto_endpoint,
        parse_workers=1,
    )
    pipeline = Pipeline.from_settings(settings)
    try:
        pipeline.ingest()
        assert pipeline.quarantine() == []
        return index_snapshot(pipeline)
    finally:
        pipeline.close()


def s3_client_through(proxy: S3FaultProxy, retries: S3Retries) -> Any:
    return s3_client(endpoint_url=proxy.endpoint, region="us-east-1", retries=retries)


def test_a_truncated_or_reset_body_is_read_again_and_never_returned_short(
    s3_client: Any, proxy: S3FaultProxy, tmp_path: Path
) -> None:
    source, _ = make_buckets(s3_client, bucket_name(tmp_path))
    body = b"0123456789" * 1000
    s3_client.put_object(Bucket=source, Key="kb/big.bin", Body=body)
    retries = S3Retries(attempts=ATTEMPTS)
    store = S3ObjectStore(s3_client_through(proxy, retries), source, "kb", retries)

    for fault in ("truncate", "reset"):
        rule = proxy.add(fault, method="GET", path=r"/kb/big\.bin$", times=2)
        assert store.read_versioned("big.bin")[0] == body
        assert rule.injected == 2
        proxy.clear()

    rule = proxy.add("truncate", method="GET", path=r"/kb/big\.bin$", times=None)
    with pytest.raises(ObjectUnavailable, match=f"in {ATTEMPTS} attempts"):
        store.read("big.bin")
    assert rule.injected == ATTEMPTS


def test_transient_faults_are_retried_and_wrong_listings_delete_nothing(
    s3_client: Any,
    proxy: S3FaultProxy,
    tmp_path: Path,
    make_pipeline: PipelineFactory,
    clean_index: dict[str, Any],
) -> None:
    assert {shard_of(key, SHARD_COUNT) for key in CORPUS} == {"shard-011"}
    source, processed = make_buckets(s3_client, bucket_name(tmp_path))
    put_corpus(s3_client, source, CORPUS)
    # Every kind of fault on each kind of request: two in a row (the 1st and 2nd matching
    # requests, then the 4th and 5th), so each request needs its third and last attempt.
    requests = {
        "source listing": ("GET", rf"^/{source}\?.*list-type=2"),
        "source object": ("GET", rf"^/{source}/kb/"),
        "processed head": ("HEAD", rf"^/{processed}/"),
        "processed object": ("GET", rf"^/{processed}/[^?]+$"),
        "processed write": ("PUT", rf"^/{processed}/"),
    }
    rules = {
        (name, fault): proxy.add(fault, method=method, path=path, skip=SKIPS[i], times=1)
        for name, (method, path) in requests.items()
        for i, fault in enumerate(TRANSIENT)
        if not (method in ("HEAD", "PUT") and fault == "truncate")  # answers without a body
    }

    pipeline = on_s3(make_pipeline, proxy.endpoint, source, processed)
    summary = pipeline.ingest()

    missed = {key: rule.seen for key, rule in rules.items() if rule.injected != 1}
    assert not missed, f"faults never injected (requests seen): {missed}"
    assert summary.as_json()["documents"]["new"] == len(CORPUS)
    assert pipeline.quarantine() == []
    assert index_snapshot(pipeline) == clean_index  # same ids and vectors, no duplicates
    assert pipeline.ingest().shards_run == []
    proxy.clear()

    # A listing that comes back empty or half empty (a well-formed, wrong answer): the deletion
    # guard refuses the deletions and the index keeps every document.
    alias = pipeline.vector_store.aliases().read()
    listings: list[tuple[FaultKind, int]] = [("empty_listing", 3), ("half_listing", 2)]
    for listing, missing in listings:
        rewrite = proxy.add(listing, method="GET", path=rf"^/{source}\?.*list-type=2", times=None)
        refusal = f"refusing to delete {missing} of 3 documents .* of collection 'notes'"
        with pytest.raises(IngestFailed, match=refusal):
            pipeline.ingest()
        assert rewrite.injected > 0
        proxy.clear()

        assert index_snapshot(pipeline) == clean_index
        assert pipeline.vector_store.aliases().read() == alias
        assert pipeline.quarantine() == []
    assert pipeline.ingest().shards_run == []  # the catalog kept them too: nothing to redo


def test_a_run_that_gives_up_leaves_the_index_unchanged_and_quarantines_nothing(
    s3_client: Any,
    proxy: S3FaultProxy,
    tmp_path: Path,
    make_pipeline: PipelineFactory,
    clean_index: dict[str, Any],
) -> None:
    source, processed = make_buckets(s3_client, bucket_name(tmp_path))
    put_corpus(s3_client, source, {**CORPUS, "notes/bikes.txt": OLD_BIKES})
    pipeline = on_s3(make_pipeline, proxy.endpoint, source, processed)
    pipeline.ingest()
    before, alias = index_snapshot(pipeline), pipeline.vector_store.aliases().read()
    assert before != clean_index

    # bikes.txt changes; the observation reads it, then S3 fails every read of it for good
    # (the parse step's read, its retries and Dagster's retries of the step).
    s3_client.put_object(Bucket=source, Key="kb/notes/bikes.txt", Body=TEXT.encode())
    outage = proxy.add(
        "internal_error", method="GET", path=rf"^/{source}/kb/notes/bikes\.txt", skip=1, times=None
    )
    with pytest.raises(IngestFailed, match=r"document_chunks failed.*InternalError.*GetObject"):
        pipeline.ingest()
    assert outage.injected > ATTEMPTS  # botocore retried before the run gave up

    assert index_snapshot(pipeline) == before
    assert pipeline.vector_store.aliases().read() == alias
    assert pipeline.quarantine() == []  # an S3 outage is not a bad document

    proxy.clear()  # S3 is back: the next run converges on the clean index
    assert pipeline.ingest().shards_run
    assert pipeline.quarantine() == []
    assert index_snapshot(pipeline) == clean_index
