"""Input resolution: files, directories, globs, hidden names, hive folders, footers."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_table, write_files

from batchscore import reader
from batchscore.errors import InputDataError
from batchscore.reader import hive_partitions, iter_batches, partition_types, resolve_inputs, scan


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
