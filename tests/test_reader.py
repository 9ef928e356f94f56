"""Input resolution: files, directories, globs, hidden names, hive folders, footers."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_table, write_files

from batchscore import reader
from batchscore.errors import InputDataError
from batchscore.reader import find_inputs, hive_partitions, iter_batches, partition_types, resolve_inputs, scan


@pytest.fixture
def tree(tmp_path):
    write_files(tmp_path / "d" / "ds=1", [make_table(5)])
    write_files(tmp_path / "d" / "ds=2", [make_table(5), make_table(5)])
    (tmp_path / "d" / "_SUCCESS").write_text("")
    (tmp_path / "d" / "notes.txt").write_text("x")
    write_files(tmp_path / "d" / "_staging-1", [make_table(5)])  # a writer's hidden staging folder
    write_files(tmp_path / "d" / ".hidden", [make_table(5)])
    return tmp_path


def test_directory_is_searched_recursively_skipping_hidden(tree):
    found = resolve_inputs([str(tree / "d")])
    assert [p.removeprefix(str(tree)) for p in found] == [
        "/d/ds=1/part-0.parquet",
        "/d/ds=2/part-0.parquet",
        "/d/ds=2/part-1.parquet",
    ]


@pytest.mark.parametrize(
    ("pattern", "count"),
    [
        ("d/ds=2/*.parquet", 2),  # plain glob
        ("d/**/part-0.parquet", 2),  # recursive glob
        ("d/ds=[12]/part-1.parquet", 1),  # character class
    ],
)
def test_globs(tree, pattern, count):
    assert len(resolve_inputs([str(tree / pattern)])) == count


def test_inputs_are_sorted_and_deduplicated(tree):
    one = str(tree / "d" / "ds=1" / "part-0.parquet")
    assert resolve_inputs([str(tree / "d"), one]) == resolve_inputs([str(tree / "d")])


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a/ds=2026-11-20/region=eu/part.parquet", {"ds": "2026-11-20", "region": "eu"}),
        ("a/b/part.parquet", {}),
        ("a/city=S%C3%A3o%20Paulo/part.parquet", {"city": "São Paulo"}),  # URL-escaped, as Hive writes
        ("a/_tmp=1/part.parquet", {}),  # hidden folders are no partitions
    ],
)
def test_hive_partitions(path, expected):
    assert hive_partitions(path) == expected


def test_scan_reads_footer_rows_and_null_counts(tmp_path):
    table = pa.table({"a": pa.array([1.0, None, 3.0]), "b": pa.array([1, 2, 3])})
    pq.write_table(table, tmp_path / "x.parquet")
    (info,) = scan([str(tmp_path / "x.parquet")])
    assert info.num_rows == 3
    assert info.null_counts == {"a": 1, "b": 0}


def test_scan_names_an_unreadable_file(tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"PAR1 nope")
    with pytest.raises(InputDataError, match=r"cannot read Parquet file .*x.parquet"):
        scan([str(tmp_path / "x.parquet")])


def test_iter_batches_projects_and_adds_partitions(tmp_path):
    (path,) = write_files(tmp_path / "ds=7", [make_table(10)], row_group_size=4)
    (info,) = scan([str(path)])
    batches = list(iter_batches(info, ["id", "ds", "f1"], batch_size=3))
    assert [b.num_rows for b in batches] == [3, 1, 3, 1, 2] or sum(b.num_rows for b in batches) == 10
    assert batches[0].schema.names == ["id", "ds", "f1"]
    assert pa.Table.from_batches(batches)["ds"].to_pylist() == [7] * 10  # an int64 column, as DuckDB reads it


# -- object stores (issue 13) ----------------------------------------------------------------------


@pytest.fixture
def remote_tree(tree, remote):
    """The same tree as `tree`, uploaded to an object store."""
    remote.upload(tree / "d", "d")
    return remote


def test_object_store_inputs_resolve_as_local_ones(tree, remote_tree):
    options = remote_tree.server.options()
    local = [p.removeprefix(str(tree / "d") + "/") for p in resolve_inputs([str(tree / "d")])]
    found = resolve_inputs([remote_tree.uri("d")], options=options)
    assert [p.removeprefix(remote_tree.uri("d") + "/") for p in found] == local  # hidden names skipped alike
    for pattern, count in [("d/ds=2/*.parquet", 2), ("d/**/part-0.parquet", 2), ("d/ds=[12]/part-1.parquet", 1)]:
        assert len(resolve_inputs([remote_tree.uri(pattern)], options=options)) == count, pattern
    files = scan(found, options=options)
    assert [f.partitions for f in files] == [{"ds": "1"}, {"ds": "2"}, {"ds": "2"}]
    assert [f.num_rows for f in files] == [5, 5, 5]
    assert all(f.size > 0 and f.mtime_ns > 0 for f in files)
    local_batches = list(iter_batches(scan(resolve_inputs([str(tree / "d")]))[1], ["id", "ds", "f1"], batch_size=3))
    remote_batches = list(iter_batches(files[1], ["id", "ds", "f1"], batch_size=3))
    assert pa.Table.from_batches(remote_batches).equals(pa.Table.from_batches(local_batches))


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("d/ds=9", "input 's3://BUCKET/d/ds=9' does not exist; check the path"),
        ("d/ds=9/*.parquet", "input glob 's3://BUCKET/d/ds=9/*.parquet' matches no file"),
        ("/nope/d", "(bucket 'nope' does not exist at that endpoint; check the bucket name and the endpoint)"),
    ],
)
def test_missing_object_store_inputs_name_what_is_missing(s3, given, message):
    uri = "s3://nope/d" if given.startswith("/nope") else s3.uri(given)
    with pytest.raises(InputDataError) as info:
        resolve_inputs([uri], options=s3.server.options())
    assert message.replace("BUCKET", s3.name) in str(info.value)


def test_unreachable_endpoint_is_an_input_error():
    with pytest.raises(InputDataError, match=r"cannot list input 's3://bkt/d': cannot reach the storage endpoint"):
        resolve_inputs(["s3://bkt/d"], options={"endpoint_override": "127.0.0.1:9", "retry_strategy": "standard:1"})


@pytest.fixture
def slow_s3(s3):
    """The S3 bucket behind a proxy that adds 20 ms to every request and counts them."""
    from servers import LatencyProxy

    proxy = LatencyProxy(s3.server.endpoint, latency=0.02)
    yield s3, proxy, {"endpoint_override": proxy.host_port, "scheme": "http"}
    proxy.close()


def test_footers_are_read_concurrently_with_few_requests(slow_s3, tmp_path):
    s3, proxy, options = slow_s3
    write_files(tmp_path / "many", [make_table(3, seed=i) for i in range(40)])
    s3.upload(tmp_path / "many", "many")
    proxy.reset()
    files = scan(find_inputs([s3.uri("many")], options=options), options=options)
    assert len(files) == 40
    assert proxy.peak > 4  # many footers in flight at once, not a serial loop
    assert proxy.requests.get("GET", 0) + proxy.requests.get("HEAD", 0) <= 2 * 40 + 4  # a few to list, then 2 a file


def test_only_the_column_chunks_asked_for_are_fetched(slow_s3, tmp_path):
    s3, proxy, options = slow_s3
    wide = pa.table({f"c{i}": np.random.default_rng(i).normal(size=20_000) for i in range(20)})
    pq.write_table(wide, tmp_path / "wide.parquet", compression="none")
    size = (tmp_path / "wide.parquet").stat().st_size
    s3.put("wide/part-0.parquet", (tmp_path / "wide.parquet").read_bytes())
    (file,) = scan(find_inputs([s3.uri("wide")], options=options), options=options)
    proxy.reset()
    (batch,) = list(iter_batches(file, ["c3"], batch_size=100_000))
    assert batch.column(0).to_numpy().tolist() == wide["c3"].to_pylist()
    assert proxy.bytes_down < size / 10  # one column of twenty, plus the footer


def test_footer_fingerprint_is_the_manifests(tree):
    """scan reads each footer once and hashes those bytes: the same fingerprint the manifest computes."""
    from batchscore import manifest, storage

    for file in scan(resolve_inputs([str(tree / "d")])):
        assert file.fingerprint == manifest.footer_sha256(storage.resolve(file.path), file.size)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["7", "12"], pa.int64()),  # month=7, month=12: numbers, as DuckDB and Polars read them
        (["2026-11-17", "2026-11-18"], pa.date32()),  # ds=...: dates
        (["7", "x"], pa.string()),  # one value that is no number: the key is a string in every file
        (["0042", "7"], pa.string()),  # 42 would not give the folder name back: store codes keep their zeros
        (["-3", "__HIVE_DEFAULT_PARTITION__"], pa.int64()),  # Hive's and Spark's null
        (["2026-13-01"], pa.string()),  # no such date
        (["2026-1-5"], pa.string()),  # not YYYY-MM-DD
        (["99999999999999999999"], pa.string()),  # beyond int64
        (["eu", "us"], pa.string()),
    ],
)
def test_partition_types_are_inferred_over_every_file(values, expected):
    assert partition_types([{"key": v} for v in values]) == {"key": expected}


def test_typed_partitions_in_every_file(tmp_path):
    write_files(tmp_path / "month=7" / "ds=2026-11-17", [make_table(3)])
    write_files(tmp_path / "month=12" / "ds=__HIVE_DEFAULT_PARTITION__", [make_table(2)])
    files = scan(resolve_inputs([str(tmp_path)]))
    assert [f.full_schema.field(k).type for f in files for k in ("month", "ds")] == [pa.int64(), pa.date32()] * 2
    got = pa.Table.from_batches([b for f in files for b in iter_batches(f, ["id", "month", "ds"], batch_size=10)])
    assert got["month"].to_pylist() == [12, 12, 7, 7, 7]
    assert got["ds"].to_pylist() == [None, None, *[pa.scalar("2026-11-17").cast(pa.date32()).as_py()] * 3]


def test_duplicate_column_names_are_an_input_error(tmp_path):
    table = pa.Table.from_arrays([pa.array([1.0]), pa.array([2.0]), pa.array([3])], names=["a", "a", "b"])
    pq.write_table(table, tmp_path / "dup.parquet")
    with pytest.raises(InputDataError, match=r"dup.parquet has column name\(s\) 'a' more than once; .* rename"):
        scan([str(tmp_path / "dup.parquet")])


def test_a_row_group_larger_than_a_batch_is_streamed_with_the_same_rows(tmp_path, monkeypatch):
    (path,) = write_files(tmp_path, [make_table(5000, seed=4)], row_group_size=5000)
    (info,) = scan([str(path)])
    whole = pa.Table.from_batches(list(iter_batches(info, ["id", "f3"], batch_size=5000)))
    monkeypatch.setattr(reader, "WHOLE_ROW_GROUP_ROWS", 100)  # the buffered, page-at-a-time path
    streamed = list(iter_batches(info, ["id", "f3"], batch_size=700))
    assert max(b.num_rows for b in streamed) == 700
    assert pa.Table.from_batches(streamed).equals(whole)
