"""Input resolution: files, directories, globs, hidden names, hive folders, footers."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_table, write_files

from batchscore.errors import InputDataError
from batchscore.reader import hive_partitions, iter_batches, resolve_inputs, scan


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
    assert pa.Table.from_batches(batches)["ds"].to_pylist() == ["7"] * 10
