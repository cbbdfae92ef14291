from pathlib import Path
from typing import Any

import pytest

from lorechat_pipeline.core.storage import (
    LocalObjectStore,
    ObjectNotFound,
    ObjectStore,
    S3ObjectStore,
    split_s3_uri,
)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "store")
    client: Any = request.getfixturevalue("s3_client")
    bucket = f"store-{tmp_path.name.lower().replace('_', '-')}"[:60]
    client.create_bucket(Bucket=bucket)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return S3ObjectStore(client, bucket, "some/prefix")


def test_write_read_list_delete(store: ObjectStore) -> None:
    keys = ["a.md", "docs/b c.md", "docs/ünï/ç.txt"]
    for number, key in enumerate(keys):
        store.write(key, f"content {number}".encode())
    assert store.read("docs/b c.md") == b"content 1"
    listed = {info.key: info for info in store.list_objects()}
    assert set(listed) == set(keys)
    assert all(info.size == len(b"content 0") for info in listed.values())
    assert {info.key for info in store.list_objects("docs/")} == {"docs/b c.md", "docs/ünï/ç.txt"}
    assert store.head("missing.md") is None
    with pytest.raises(ObjectNotFound):
        store.read("missing.md")
    assert store.delete_prefix("docs/") == 2
    assert [info.key for info in store.list_objects()] == ["a.md"]


def test_etag_changes_with_content(store: ObjectStore) -> None:
    store.write("x.txt", b"one")
    first = store.head("x.txt")
    store.write("x.txt", b"two!")
    second = store.head("x.txt")
    assert first is not None
    assert second is not None
    assert first.etag != second.etag
    data, _ = store.read_versioned("x.txt")
    assert data == b"two!"


def test_s3_reads_report_the_object_version(s3_client: Any) -> None:
    s3_client.create_bucket(Bucket="versioned")
    s3_client.put_bucket_versioning(
        Bucket="versioned", VersioningConfiguration={"Status": "Enabled"}
    )
    store = S3ObjectStore(s3_client, "versioned")
    store.write("doc.md", b"v1")
    data, version = store.read_versioned("doc.md")
    assert data == b"v1"
    assert version


def test_local_write_is_atomic_and_keys_are_checked(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.write("deep/er/file.bin", b"x" * 10)
    assert not [p for p in tmp_path.rglob(".tmp-*")]
    for bad in ("../escape", "/abs", "a//b", "a/./b"):
        with pytest.raises(ValueError, match="invalid object key"):
            store.write(bad, b"")
    store.delete(["deep/er/file.bin"])
    assert not (tmp_path / "deep").exists()  # empty folders are pruned


def test_split_s3_uri() -> None:
    assert split_s3_uri("s3://bucket/some/prefix") == ("bucket", "some/prefix")
    assert split_s3_uri("s3://bucket") == ("bucket", "")
    with pytest.raises(ValueError, match="not an s3"):
        split_s3_uri("/tmp/x")


def test_tables_are_parquet_any_reader_reads_and_earlier_ones_still_load(tmp_path: Path) -> None:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from lorechat_pipeline.core.tables import read_table, table_to_bytes, write_table

    table = pa.table(
        {
            "chunk_id": ["a", "b"],
            "text": ["first chunk", "second chunk"],
            "element_types": [["Title"], ["NarrativeText", "ListItem"]],
            "vector": pa.FixedSizeListArray.from_arrays(pa.array([0.5, 1.0, -1.0, 2.0]), 2),
        }
    )
    store = LocalObjectStore(tmp_path / "store")
    write_table(store, "t.parquet", table)
    assert read_table(store, "t.parquet") == table
    written = pq.ParquetFile(tmp_path / "store" / "t.parquet").metadata.row_group(0).column(1)
    assert written.compression == "LZ4"  # pyarrow's name for the LZ4_RAW codec it writes
    assert pq.read_table(io.BytesIO(table_to_bytes(table))) == table
    # Artifacts written before (zstd) are read as they are.
    earlier = io.BytesIO()
    pq.write_table(table, earlier, compression="zstd")
    store.write("earlier.parquet", earlier.getvalue())
    assert read_table(store, "earlier.parquet") == table
    assert read_table(store, "missing.parquet") is None
