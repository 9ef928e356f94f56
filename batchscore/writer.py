"""Parquet out, atomically.

Parts are written into a hidden staging folder ``DIR/_staging-<run id>/`` and
moved into ``DIR`` only when every part succeeded; ``DIR/_SUCCESS`` comes last.
A reader globbing ``DIR/*.parquet`` never sees a partial part, and a failed run
leaves the previous output (if any) as it was.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import shutil
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from batchscore.errors import OutputError, OutputExistsError
from batchscore.spec import Mode

log = logging.getLogger("batchscore")

SUCCESS = "_SUCCESS"
METADATA_KEY = b"batchscore"


def part_name(index: int) -> str:
    """``part-00000.parquet``: one part per input file, in sorted input order."""
    return f"part-{index:05d}.parquet"


class OutputDir:
    """The output folder of one run: a staging area, then an all-or-nothing commit."""

    def __init__(self, path: str, *, mode: Mode, run_id: str, metadata: dict[str, Any]) -> None:
        self.path = path
        self.mode = mode
        self.staging = os.path.join(path, f"_staging-{run_id}")
        self.metadata = {METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()}
        self._created = False

    def existing_output(self) -> list[str]:
        """Committed output already in the folder: parts and the success marker."""
        found = glob.glob(os.path.join(glob.escape(self.path), "*.parquet"))
        if os.path.exists(os.path.join(self.path, SUCCESS)):
            found.append(os.path.join(self.path, SUCCESS))
        return sorted(found)

    def prepare(self) -> None:
        """Check the folder can take this run's output and create the staging area."""
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            msg = f"output path {self.path} is a file, not a directory; pass --out with a directory"
            raise OutputError(msg)
        existing = self.existing_output()
        if existing and self.mode == "error":
            msg = (
                f"output directory {self.path} already holds output ({len(existing)} file(s), "
                f"e.g. {os.path.basename(existing[0])}); pass --mode overwrite to replace it, or choose another --out"
            )
            raise OutputExistsError(msg)
        self._created = not os.path.exists(self.path)
        try:
            os.makedirs(self.staging)
        except OSError as exc:
            msg = (
                f"cannot create output directory {self.staging}: {exc.strerror or exc}; check the path and permissions"
            )
            raise OutputError(msg) from exc

    def open_part(self, index: int, schema: pa.Schema) -> pq.ParquetWriter:
        """A Parquet writer for part ``index`` in the staging area."""
        path = os.path.join(self.staging, part_name(index))
        dictionary = [f.name for f in schema if not pa.types.is_floating(f.type) and not _is_float_list(f.type)]
        try:
            return pq.ParquetWriter(
                path,
                schema.with_metadata(self.metadata),
                compression="zstd",
                use_dictionary=dictionary,
            )
        except OSError as exc:
            msg = f"cannot write {path}: {exc}; check free space and permissions"
            raise OutputError(msg) from exc

    def commit(self, parts: int) -> list[str]:
        """Move every staged part into place, drop stale old parts, then write ``_SUCCESS``."""
        names = [part_name(i) for i in range(parts)]
        final = [os.path.join(self.path, n) for n in names]
        try:
            old = set(self.existing_output())
            success = os.path.join(self.path, SUCCESS)
            if success in old:
                os.remove(success)
            for name, dest in zip(names, final, strict=True):
                os.replace(os.path.join(self.staging, name), dest)
            for stale in sorted(old - set(final) - {success}):
                os.remove(stale)
            with open(success, "wb"):
                pass
            os.rmdir(self.staging)
        except OSError as exc:
            msg = f"cannot commit output into {self.path}: {exc}; check free space and permissions"
            raise OutputError(msg) from exc
        log.info("committed %d part(s) to %s", parts, self.path)
        return final

    def abort(self) -> None:
        """Remove the staging area; committed output is left as it was."""
        shutil.rmtree(self.staging, ignore_errors=True)
        if self._created:
            with contextlib.suppress(OSError):
                os.rmdir(self.path)


def _is_float_list(dtype: pa.DataType) -> bool:
    return bool(pa.types.is_list(dtype) and pa.types.is_floating(dtype.value_type))


def read_metadata(path: str) -> dict[str, Any]:
    """The ``batchscore`` footer metadata of an output part."""
    meta = pq.read_schema(path).metadata or {}
    return dict(json.loads(meta[METADATA_KEY]))
