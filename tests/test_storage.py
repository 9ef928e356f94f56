"""The storage seam on local disk: listings, globs, atomic and exclusive writes, moves."""

from __future__ import annotations

import pytest

from batchscore import storage


@pytest.fixture
def tree(tmp_path):
    for rel in ["a/ds=1/x.parquet", "a/ds=1/_staging/y.parquet", "a/.hidden/w.parquet", "a/z.parquet", "a/notes.txt"]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * len(rel))
    return storage.resolve(tmp_path / "a")


def rel(found, base):
    return [f.location.relative_to(base) for f in found]


def test_listing_skips_hidden_names_below_the_folder(tree):
    assert rel(tree.list_files(), tree) == ["ds=1/x.parquet", "notes.txt", "z.parquet"]
    assert rel(storage.iter_parquet(tree), tree) == ["ds=1/x.parquet", "z.parquet"]
    assert [f.size for f in tree.list_files()] == [len("a/ds=1/x.parquet"), len("a/notes.txt"), len("a/z.parquet")]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*.parquet", ["z.parquet"]),  # one level only
        ("**/*.parquet", ["ds=1/x.parquet", "z.parquet"]),  # ** spans zero or more folders
        ("ds=*/*.parquet", ["ds=1/x.parquet"]),
        ("ds=[0-9]/x.parq?et", ["ds=1/x.parquet"]),
        ("*", ["notes.txt", "z.parquet"]),
    ],
)
def test_glob(tree, pattern, expected):
    assert rel(tree.glob(pattern), tree) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("data/ds=2026-*/*.parquet", ("data", "ds=2026-*/*.parquet")),
        ("s3://b/ev/ds=2026-11-*/*.parquet", ("s3://b/ev", "ds=2026-11-*/*.parquet")),
        ("*.parquet", (".", "*.parquet")),
        ("data/x.parquet", ("data/x.parquet", None)),
    ],
)
def test_split_glob(text, expected):
    assert storage.split_glob(text) == expected


def test_paths_and_file_uris_resolve_to_the_same_absolute_location(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.resolve("x/../y").uri == str(tmp_path / "y")
    assert storage.resolve(f"file://{tmp_path}/y").uri == str(tmp_path / "y")
    assert storage.resolve(tmp_path / "y").is_within(storage.resolve(tmp_path))
    assert not storage.resolve(tmp_path).is_within(storage.resolve(tmp_path / "y"))


def test_atomic_write_exclusive_create_and_move(tmp_path):
    target = storage.resolve(tmp_path / "sub" / "m.json")
    target.write_bytes(b"old")
    target.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["m.json"]  # no temp file left
    assert not target.create_new(b"again")
    fresh = storage.resolve(tmp_path / "sub" / "n")
    assert fresh.create_new(b"first")
    assert fresh.read_bytes() == b"first"
    fresh.move_to(target)
    assert target.read_bytes() == b"first"
    assert not fresh.exists()
    assert not fresh.delete()


def test_local_lock_file_is_exclusive(tmp_path):
    where = storage.resolve(tmp_path / "lock")
    held = where.open_locked()
    assert held is not None
    held.replace_content(b"me")
    assert held.read() == b"me"
    # flock is per open file description: a second open in this process is refused too
    assert where.open_locked() is None
    held.release()
    assert not where.exists()
    again = where.open_locked()
    assert again is not None
    again.release()
