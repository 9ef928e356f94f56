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
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from batchscore.errors import OutputError, OutputExistsError
from batchscore.spec import Mode

log = logging.getLogger("batchscore")

SUCCESS = "_SUCCESS"
METADATA_KEY = b"batchscore"
ROW_GROUP_ROWS = 1 << 20
ROW_GROUP_BYTES = 64 << 20


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

    def open_part(self, index: int, schema: pa.Schema, *, dictionary: Sequence[str] = ()) -> PartWriter:
        """A writer for part ``index`` in the staging area; ``dictionary`` names the columns to dictionary-encode."""
        return PartWriter(os.path.join(self.staging, part_name(index)), schema.with_metadata(self.metadata), dictionary)

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


class PartWriter:
    """One output Parquet file: zstd, batches gathered into row groups of about ``ROW_GROUP_ROWS``.

    Large row groups keep downstream scans (DuckDB, Spark) fast; the bytes
    limit keeps memory bounded when the passthrough columns are wide.
    """

    def __init__(self, path: str, schema: pa.Schema, dictionary: Sequence[str]) -> None:
        self.path = path
        self.schema = schema
        self._pending: list[pa.RecordBatch] = []
        self._rows = 0
        self._bytes = 0
        try:
            self._writer = pq.ParquetWriter(path, schema, compression="zstd", use_dictionary=list(dictionary))
        except OSError as exc:
            raise OutputError(_write_error(path, exc)) from exc

    def write(self, batch: pa.RecordBatch) -> None:
        """Add a batch; a row group is written once enough rows or bytes are pending."""
        self._pending.append(batch)
        self._rows += batch.num_rows
        self._bytes += batch.nbytes
        if self._rows >= ROW_GROUP_ROWS or self._bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        try:
            self._writer.write_table(table, row_group_size=max(self._rows, 1))
        except OSError as exc:
            raise OutputError(_write_error(self.path, exc)) from exc
        self._pending, self._rows, self._bytes = [], 0, 0

    def close(self) -> None:
        """Write what is pending and the footer."""
        self._flush()
        try:
            self._writer.close()
        except OSError as exc:
            raise OutputError(_write_error(self.path, exc)) from exc


def dictionary_columns(schema: pa.Schema, *, also: Sequence[str] = ()) -> list[str]:
    """Columns worth dictionary-encoding: strings, binaries and bools, plus ``also`` (class labels).

    Floats never (it makes writes several times slower) and other numbers not by
    default: ids are unique, and a dictionary that overflows costs time for nothing.
    """
    chosen = [
        f.name
        for f in schema
        if pa.types.is_string(f.type)
        or pa.types.is_large_string(f.type)
        or pa.types.is_binary(f.type)
        or pa.types.is_boolean(f.type)
        or pa.types.is_dictionary(f.type)
    ]
    return chosen + [name for name in also if name not in chosen]


def _write_error(path: str, exc: OSError) -> str:
    return f"cannot write {path}: {exc}; check free space and permissions"


def read_metadata(path: str) -> dict[str, Any]:
    """The ``batchscore`` footer metadata of an output part."""
    meta = pq.read_schema(path).metadata or {}
    return dict(json.loads(meta[METADATA_KEY]))
