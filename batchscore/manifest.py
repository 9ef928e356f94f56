"""``DIR/_batchscore.json``: what is in an output folder and where it came from.

One JSON file serves two readers. A person (or a lineage tool) finds the run
id, job file, spec, model path and sha256, onnxruntime version, provider, input
files with row counts, parts, null counts and timings. A later run finds, for
each committed part, the input it came from (its absolute location and the
sha256 of its Parquet footer) and the files it wrote (names, sizes, rows);
together with the model sha256 and the spec hash at the top, that says which
parts are still valid, and which Parquet files in the folder are batchscore's
at all: a run replaces or deletes only files a manifest lists.

The manifest is replaced in one step by the commit (see :mod:`batchscore.writer`).
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from batchscore.errors import OutputError
from batchscore.storage import Location

MANIFEST = "_batchscore.json"
VERSION = 2
"""2: inputs keyed by absolute location and footer sha256; part files with sizes; a journaled commit."""

_TAIL = 64 << 10
"""Bytes read from a file's end to find its footer: most footers fit, so one read (one request) is enough."""


def spec_hash(settings: dict[str, Any]) -> str:
    """A short hash of the settings that shape the output's data and layout."""
    blob = json.dumps(settings, sort_keys=True, default=list).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def footer_sha256(where: Location, size: int) -> str:
    """sha256 of a Parquet file's footer: it changes with any row group (offsets, sizes, statistics)."""
    tail = where.read_tail(min(size, _TAIL), size)
    if len(tail) < 8 or tail[-4:] != b"PAR1":
        return hashlib.sha256(tail).hexdigest()  # not Parquet: the reader says so; the hash still differs
    (length,) = struct.unpack("<I", tail[-8:-4])
    if length + 8 > len(tail):
        tail = where.read_tail(min(size, length + 8), size)
    return hashlib.sha256(tail[-(length + 8) :]).hexdigest()


def part_entry(index: int, file: Any, *, files: list[str], rows: int, **extra: Any) -> dict[str, Any]:
    """The manifest record of one part: the input it came from and the files it wrote."""
    return {
        "index": index,
        "input": file.path,
        "fingerprint": file.fingerprint,
        "size": file.size,
        "mtime_ns": file.mtime_ns,
        "rows_in": file.num_rows,
        "rows": rows,
        "files": files,
        **extra,
    }


def same_input(entry: dict[str, Any], file: Any) -> bool:
    """The part was scored from this very input: same location and the same footer bytes."""
    return bool(entry.get("input") == file.path and entry.get("fingerprint") == file.fingerprint)


def parts_intact(entry: dict[str, Any], folder: Location) -> bool:
    """Every file of a part is there with its recorded size, and their footers hold the recorded rows."""
    names, sizes = entry.get("files", []), entry.get("sizes")
    if not isinstance(sizes, list) or len(sizes) != len(names):
        return False
    rows = 0
    for name, size in zip(names, sizes, strict=True):
        where = folder.child(name)
        info = where.info()
        if info is None or info.size != size:
            return False
        try:
            with where.open_input() as fh:
                rows += pq.read_metadata(fh).num_rows
        except (OSError, pa.ArrowException):
            return False
    return rows == entry.get("rows")


def read(folder: Location) -> dict[str, Any] | None:
    """The folder's manifest, or None if it has none; a damaged one is an :class:`OutputError`."""
    where = folder.child(MANIFEST)
    try:
        data = json.loads(where.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        msg = (
            f"cannot read manifest {where.uri}: {' '.join(str(exc).split())}; without it batchscore cannot tell "
            "its own parts from other files there: move the folder's contents away, or choose another --out"
        )
        raise OutputError(msg) from exc
    problem = _malformed(data)
    if problem:
        msg = (
            f"manifest {where.uri} is not a batchscore manifest ({problem}); without it batchscore cannot tell its "
            "own parts from other files there: move the folder's contents away, or choose another --out"
        )
        raise OutputError(msg)
    return dict(data)


def _malformed(data: Any) -> str:
    if not isinstance(data, dict) or not isinstance(data.get("parts"), list):
        return "no list of parts"
    for number, entry in enumerate(data["parts"]):
        if not isinstance(entry, dict):
            return f"part entry {number} is not an object"
        if not isinstance(entry.get("index"), int) or isinstance(entry.get("index"), bool):
            return f"part entry {number} has no integer index"
        files = entry.get("files")
        if not isinstance(files, list) or not all(isinstance(f, str) and f and ".." not in f for f in files):
            return f"part entry {number} has no list of file names"
        if not isinstance(entry.get("rows"), int):
            return f"part entry {number} has no row count"
    return ""


def listed_files(data: dict[str, Any] | None) -> set[str]:
    """Every file name (relative to the folder) a manifest lists as a part."""
    if data is None:
        return set()
    return {name for entry in data["parts"] for name in entry["files"]}


def encode(data: dict[str, Any]) -> bytes:
    """The manifest's bytes, versioned."""
    return (json.dumps({"manifest_version": VERSION, **data}, indent=2, default=list) + "\n").encode()
