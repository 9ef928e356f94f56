"""``DIR/_batchscore.json``: what is in an output folder and where it came from.

One JSON file serves two readers. A person (or a lineage tool) finds the run
id, job file, spec, model path and sha256, onnxruntime version, provider, input
files with row counts, parts, null counts and timings. A resumed run finds, for
each committed part, the input file it came from (path, size, mtime) and the
files it wrote; together with the model sha256 and the spec hash at the top,
that says which parts are still valid. The file is replaced atomically
(write, fsync, rename), so a crash leaves the old version or the new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from typing import Any

from batchscore.errors import OutputError
from batchscore.reader import InputFile

MANIFEST = "_batchscore.json"
VERSION = 1


def spec_hash(settings: dict[str, Any]) -> str:
    """A short hash of the settings that shape the output's data and layout."""
    blob = json.dumps(settings, sort_keys=True, default=list).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def part_entry(index: int, file: InputFile, *, files: list[str], rows: int, **extra: Any) -> dict[str, Any]:
    """The manifest record of one committed part."""
    return {
        "index": index,
        "input": file.path,
        "size": file.size,
        "mtime_ns": file.mtime_ns,
        "rows_in": file.num_rows,
        "rows": rows,
        "files": files,
        **extra,
    }


def still_valid(entry: dict[str, Any], file: InputFile, folder: str) -> bool:
    """A committed part can be kept if its input file is unchanged and its files are all there."""
    same_input = (entry.get("input"), entry.get("size"), entry.get("mtime_ns")) == (
        file.path,
        file.size,
        file.mtime_ns,
    )
    return same_input and all(os.path.isfile(os.path.join(folder, f)) for f in entry.get("files", []))


def read(folder: str) -> dict[str, Any] | None:
    """The folder's manifest, or None if it has none."""
    path = os.path.join(folder, MANIFEST)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        msg = f"cannot read manifest {path}: {exc}; pass --mode overwrite to rescore the folder"
        raise OutputError(msg) from exc
    if not isinstance(data, dict) or not isinstance(data.get("parts"), list):
        msg = f"manifest {path} is not a batchscore manifest; pass --mode overwrite to rescore the folder"
        raise OutputError(msg)
    return data


def write(folder: str, data: dict[str, Any]) -> None:
    """Replace the folder's manifest atomically."""
    path = os.path.join(folder, MANIFEST)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"manifest_version": VERSION, **data}, fh, indent=2, default=list)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        msg = f"cannot write manifest {path}: {exc}; check free space and permissions"
        raise OutputError(msg) from exc


def remove(folder: str) -> None:
    """Delete the manifest (before parts it describes are replaced)."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(folder, MANIFEST))
