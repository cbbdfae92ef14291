"""Sensors with explicit cursors: new, modified and deleted objects become runs of exactly their
shards; an unchanged tick asks for nothing and a repeated tick asks for the same run keys."""

import json
import time
from pathlib import Path
from typing import Any

import dagster as dg

from lorechat_pipeline.core.change_detection import (
    ListingCursor,
    changed_shards,
    shard_digests,
)
from lorechat_pipeline.core.ids import SHARD_COUNT, shard_of
from lorechat_pipeline.core.storage import LocalObjectStore, ObjectInfo
from lorechat_pipeline.defs.automation.requests import (
    PARTITION_RANGE_END_TAG,
    PARTITION_RANGE_START_TAG,
)
from lorechat_pipeline.defs.automation.sensors import build_source_listing_sensor
from lorechat_pipeline.resources.object_store import LocalFolderStore
from lorechat_pipeline.settings import load_settings
from tests.pipeline.conftest import write


def tick(folder: Path, cursor: str | None) -> dg.SensorResult:
    sensor = build_source_listing_sensor(load_settings(sensor_interval_seconds=7))
    context = dg.build_sensor_context(
        cursor=cursor, resources={"source": LocalFolderStore(path=str(folder))}
    )
    result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def partitions(result: dg.SensorResult) -> list[str]:
    """The shards a tick found changed; one run covers them all (a range when several)."""
    requests = result.run_requests or []
    assert len(requests) <= 1
    if not requests:
        return []
    (request,) = requests
    shards = request.tags["lorechat/shards"].split(",")
    if len(shards) == 1:
        assert request.partition_key == shards[0]
    else:
        assert request.partition_key is None
        assert request.tags[PARTITION_RANGE_START_TAG] == shards[0]
        assert request.tags[PARTITION_RANGE_END_TAG] == shards[-1]
    return shards


def info(key: str, etag: str = "e1", size: int = 10) -> ObjectInfo:
    from datetime import UTC, datetime

    return ObjectInfo(key, size, etag, None, datetime(2026, 1, 1, tzinfo=UTC))


def test_digests_are_order_independent_and_track_key_etag_and_size() -> None:
    objects = [info("a.md"), info("b/c.pdf"), info("b/c.pdf.metadata.json")]
    base = shard_digests(objects, SHARD_COUNT)
    assert shard_digests(list(reversed(objects)), SHARD_COUNT) == base
    owner = shard_of("b/c.pdf", SHARD_COUNT)
    for changed in (
        [info("a.md"), info("b/c.pdf", etag="e2"), info("b/c.pdf.metadata.json")],
        [info("a.md"), info("b/c.pdf", size=11), info("b/c.pdf.metadata.json")],
        [info("a.md"), info("b/c.pdf"), info("b/c.pdf.metadata.json", etag="e9")],
        [info("a.md"), info("b/c.pdf")],
    ):
        digests = shard_digests(changed, SHARD_COUNT)
        # A sidecar belongs to its document's shard, so only that shard moves.
        assert changed_shards(ListingCursor(base), digests) == [owner]
    assert changed_shards(ListingCursor(base), base) == []
    assert changed_shards(None, base) == sorted(base)


def test_cursor_stays_small_for_a_million_objects() -> None:
    many = (info(f"docs/{n:07d}.md", etag=str(n)) for n in range(1_000_000))
    cursor = ListingCursor(shard_digests(many, SHARD_COUNT)).serialize()
    assert len(cursor) < 1024
    assert ListingCursor.parse(cursor) == ListingCursor(json.loads(cursor)["digests"])
    assert ListingCursor.parse("not json") is None
    assert ListingCursor.parse(None) is None


def test_listing_sensor_requests_runs_for_new_modified_and_deleted_objects(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "inbox"
    folder.mkdir()
    assert tick(folder, None).run_requests == []  # an empty source asks for nothing

    write(folder, "a.md", "# A\n\nalpha")
    write(folder, "team/b.txt", "bravo")
    first = tick(folder, None)
    expected = sorted({shard_of("a.md", SHARD_COUNT), shard_of("team/b.txt", SHARD_COUNT)})
    assert partitions(first) == expected
    assert all(r.tags["lorechat/trigger"] == "listing" for r in first.run_requests or [])
    assert first.cursor is not None

    # Unchanged tick: no runs; a repeated tick over the same listing: the same run keys.
    assert tick(folder, first.cursor).run_requests == []
    again = tick(folder, None)
    assert [r.run_key for r in again.run_requests or []] == [
        r.run_key for r in first.run_requests or []
    ]

    # Modified in place (same key, new bytes): only its shard.
    time.sleep(0.01)
    write(folder, "a.md", "# A\n\nalpha, revised and longer")
    modified = tick(folder, first.cursor)
    assert partitions(modified) == [shard_of("a.md", SHARD_COUNT)]

    # Deleted: its shard runs so the deletion propagates.
    (folder / "team" / "b.txt").unlink()
    deleted = tick(folder, modified.cursor)
    assert partitions(deleted) == [shard_of("team/b.txt", SHARD_COUNT)]
    # Each distinct state of a shard gets its own run key.
    keys = [r.run_key for result in (first, modified, deleted) for r in result.run_requests or []]
    assert len(keys) == len(set(keys))


def test_listing_sensor_reads_s3_through_moto(s3_client: Any, moto_endpoint: str) -> None:
    from lorechat_pipeline.defs.resources import object_store

    s3_client.create_bucket(Bucket="uploads")
    settings = load_settings(s3_endpoint_url=moto_endpoint)
    source = object_store("s3://uploads/kb", settings)
    sensor = build_source_listing_sensor(settings)

    def evaluate(cursor: str | None) -> dg.SensorResult:
        with dg.build_sensor_context(cursor=cursor, resources={"source": source}) as context:
            result = sensor(context)
        assert isinstance(result, dg.SensorResult)
        return result

    s3_client.put_object(Bucket="uploads", Key="kb/guide.md", Body=b"# Guide\n\nhello")
    s3_client.put_object(Bucket="uploads", Key="elsewhere/x.md", Body=b"not in the source")
    first = evaluate(None)
    assert partitions(first) == [shard_of("guide.md", SHARD_COUNT)]
    s3_client.put_object(Bucket="uploads", Key="kb/guide.md", Body=b"# Guide\n\nhello again")
    assert partitions(evaluate(first.cursor)) == [shard_of("guide.md", SHARD_COUNT)]


def test_local_store_listing_matches_sensor_view(tmp_path: Path) -> None:
    folder = tmp_path / "src"
    write(folder, "x/y.md", "hello")
    listing = list(LocalObjectStore(folder).list_objects())
    digests = shard_digests(listing, SHARD_COUNT)
    assert changed_shards(None, digests) == sorted(digests)
