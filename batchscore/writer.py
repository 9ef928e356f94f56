"""Parquet out, atomically, under a lock, resumable.

One run per folder: ``DIR/_batchscore.lock`` (see :mod:`batchscore.lock`) is
taken first, and staging folders left by dead runs are removed under it.

Parts are written into a hidden staging folder ``DIR/_staging-<run id>/``.

- ``mode`` error/overwrite: all or nothing. Parts move into ``DIR`` only when
  every part succeeded; ``_SUCCESS`` and the manifest are removed first and
  written last. A failed run leaves the previous output (if any) as it was.
- ``mode`` resume: each part moves into ``DIR`` as soon as it is written and
  the manifest (:mod:`batchscore.manifest`) records it, so a crashed run loses
  at most the parts in flight. ``_SUCCESS`` is written once every part is there.

With ``partition_by``, each part is split by pyarrow's dataset writer into
hive folders ``DIR/col=value/part-NNNNN-0.parquet``; the commit is the same.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from batchscore import manifest
from batchscore.errors import OutputError, OutputExistsError
from batchscore.lock import OutputLock
from batchscore.reader import InputFile
from batchscore.spec import Compression, Mode

log = logging.getLogger("batchscore")

SUCCESS = "_SUCCESS"
METADATA_KEY = b"batchscore"
ROW_GROUP_ROWS = 1 << 20
ROW_GROUP_BYTES = 64 << 20
STAGING_PREFIX = "_staging-"


def part_name(index: int) -> str:
    """``part-00000.parquet``: one part per input file, in sorted input order."""
    return f"{part_stem(index)}.parquet"


def part_stem(index: int, piece: int | None = None) -> str:
    """``part-00000``, or ``part-00000-001`` for the second piece of an input file split into tasks.

    Pieces sort after nothing of another file and in their own order, so sorted names are input order.
    """
    return f"part-{index:05d}" if piece is None else f"part-{index:05d}-{piece:03d}"


class OutputDir:
    """The output folder of one run: lock, staging, parts, manifest, commit."""

    def __init__(
        self,
        path: str,
        *,
        mode: Mode,
        run_id: str,
        metadata: dict[str, Any],
        compression: Compression = "zstd",
        partition_by: Sequence[str] | None = None,
        header: dict[str, Any] | None = None,
    ) -> None:
        self.path = path
        self.mode = mode
        self.staging = Staging(
            os.path.join(path, f"{STAGING_PREFIX}{run_id}"),
            metadata=metadata,
            compression=compression,
            partition_by=tuple(partition_by or ()),
        )
        """Where parts are written before the commit; picklable, so workers in other processes write there too."""
        self.partition_by = list(partition_by or ())
        self.header = dict(header or {})
        """Identity and lineage written at the top of the manifest (model_sha256, spec_hash, ...)."""
        self.parts: dict[int, dict[str, Any]] = {}
        """Manifest entries of the parts of this output, by index: kept from before, or written now."""
        self.complete = False
        """True when resume finds the output already complete: nothing to score, nothing to commit."""
        self._lock = OutputLock(path, run_id=run_id)
        self._created = False
        self._orphans: list[str] = []

    # -- opening ------------------------------------------------------------------------------

    def existing_output(self) -> list[str]:
        """Committed output already in the folder: parts (in hive folders too) and the success marker."""
        found = [os.path.join(self.path, f) for f in committed_files(self.path)]
        if os.path.exists(os.path.join(self.path, SUCCESS)):
            found.append(os.path.join(self.path, SUCCESS))
        return sorted(found)

    def check(self, files: Sequence[InputFile]) -> list[int]:
        """What this run would do, read-only: raise if the mode forbids it; the indices of the files to score."""
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            msg = f"output path {self.path} is a file, not a directory; pass --out with a directory"
            raise OutputError(msg)
        existing = self.existing_output()
        if existing and self.mode == "error":
            msg = (
                f"output directory {self.path} already holds output ({len(existing)} file(s), "
                f"e.g. {os.path.relpath(existing[0], self.path)}); pass --mode overwrite to replace it, "
                "--mode resume to finish it, or choose another --out"
            )
            raise OutputExistsError(msg)
        self.parts = {}
        if self.mode == "resume":
            self._check_resume(files, existing)
        return [i for i in range(len(files)) if i not in self.parts]

    def open(self, files: Sequence[InputFile]) -> list[int]:
        """Lock the folder, clean up after dead runs, check it against the mode; the indices of the files to score."""
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            self.check(files)  # raises the clear message
        self._created = not os.path.exists(self.path)
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as exc:
            msg = f"cannot create output directory {self.path}: {exc.strerror or exc}; check the path and permissions"
            raise OutputError(msg) from exc
        self._lock.acquire()
        try:
            self._remove_dead_staging()
            todo = self.check(files)
            if self.mode == "resume" and not self.complete:
                self._start_resume(len(files))
            os.makedirs(self.staging.path)
        except BaseException:
            self.close()
            raise
        return todo

    def _remove_dead_staging(self) -> None:
        for stale in glob.glob(os.path.join(glob.escape(self.path), f"{STAGING_PREFIX}*")):
            log.warning("removing %s, left by a run that did not finish", stale)
            shutil.rmtree(stale, ignore_errors=True)

    def _check_resume(self, files: Sequence[InputFile], existing: list[str]) -> None:
        old = manifest.read(self.path)
        if old is None:
            if existing:
                msg = (
                    f"cannot resume {self.path}: it holds output but no {manifest.MANIFEST}, so it is unknown what "
                    "scored it; pass --mode overwrite to rescore it"
                )
                raise OutputExistsError(msg)
            return
        for key, what in (("model_sha256", "a different model (sha256"), ("spec_hash", "different options (spec hash")):
            if old.get(key) != self.header.get(key):
                msg = (
                    f"cannot resume {self.path}: its parts were scored with {what} {old.get(key)}, "
                    f"this run has {self.header.get(key)}); pass --mode overwrite to rescore everything"
                )
                raise OutputExistsError(msg)
        for entry in old["parts"]:
            index = entry.get("index")
            if isinstance(index, int) and index < len(files) and manifest.still_valid(entry, files[index], self.path):
                self.parts[index] = entry
        self._orphans = [f for f in committed_files(self.path) if f not in self._kept_files()]
        done = os.path.exists(os.path.join(self.path, SUCCESS))
        self.complete = len(self.parts) == len(files) and not self._orphans and done and bool(old.get("complete"))

    def _start_resume(self, parts: int) -> None:
        if self.parts:
            log.info("resuming %s: %d of %d part(s) already committed", self.path, len(self.parts), parts)
        self._remove_success()
        manifest.write(self.path, self._manifest(complete=False))
        for name in self._orphans:
            log.info("removing %s: not part of this output any more", name)
            os.remove(os.path.join(self.path, name))
        _remove_empty_dirs(self.path)

    def _kept_files(self) -> set[str]:
        return {f for entry in self.parts.values() for f in entry["files"]}

    # -- writing ------------------------------------------------------------------------------

    def write_part(
        self,
        index: int,
        schema: pa.Schema,
        batches: Iterable[pa.RecordBatch],
        *,
        dictionary: Sequence[str] = (),
        piece: int | None = None,
    ) -> list[str]:
        """Write one part into the staging area (see :meth:`Staging.write_part`)."""
        return self.staging.write_part(index, schema, batches, dictionary=dictionary, piece=piece)

    def finish_part(self, index: int, entry: dict[str, Any]) -> None:
        """A part is written: in resume mode commit it now, otherwise keep it staged."""
        if self.mode == "resume":
            self._move_in(entry["files"])
            self.parts[index] = entry
            manifest.write(self.path, self._manifest(complete=False))
            log.debug("committed part %d (%s)", index, ", ".join(entry["files"]))
        else:
            self.parts[index] = entry

    # -- committing ---------------------------------------------------------------------------

    def commit(self, parts: int, lineage: dict[str, Any]) -> list[str]:
        """Move every staged part into place, drop stale old parts, write the manifest, then ``_SUCCESS``."""
        if sorted(self.parts) != list(range(parts)):
            msg = f"internal error: {len(self.parts)} of {parts} parts written in {self.staging.path}"
            raise OutputError(msg)
        names = [f for i in range(parts) for f in self.parts[i]["files"]]
        try:
            if self.mode != "resume":
                old = set(committed_files(self.path))
                self._remove_success()
                self._move_in(names)
                for stale in sorted(old - set(names)):
                    os.remove(os.path.join(self.path, stale))
                _remove_empty_dirs(self.path)
            self.header.update(lineage)
            manifest.write(self.path, self._manifest(complete=True))
            with open(os.path.join(self.path, SUCCESS), "wb"):
                pass
            shutil.rmtree(self.staging.path, ignore_errors=True)
        except OSError as exc:
            msg = f"cannot commit output into {self.path}: {exc}; check free space and permissions"
            raise OutputError(msg) from exc
        log.info("committed %d part(s) to %s", parts, self.path)
        return [os.path.join(self.path, n) for n in names]

    def close(self) -> None:
        """Remove the staging area and let go of the lock; committed output is left as it is."""
        shutil.rmtree(self.staging.path, ignore_errors=True)
        self._lock.release()
        if self._created:
            with contextlib.suppress(OSError):
                os.rmdir(self.path)

    def _manifest(self, *, complete: bool) -> dict[str, Any]:
        return {**self.header, "complete": complete, "parts": [self.parts[i] for i in sorted(self.parts)]}

    def _remove_success(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(self.path, SUCCESS))
        if self.mode != "resume":
            manifest.remove(self.path)

    def _move_in(self, names: Iterable[str]) -> None:
        for name in names:
            dest = os.path.join(self.path, name)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            os.replace(os.path.join(self.staging.path, name), dest)


class Staging:
    """The staging folder of one run, ``DIR/_staging-<run id>/``: parts are written here, the driver commits them.

    It pickles (a path and the write options), so a worker in another process, or on
    another machine sharing the folder, writes its parts where the driver will commit them.
    """

    def __init__(
        self,
        path: str,
        *,
        metadata: dict[str, Any],
        compression: Compression = "zstd",
        partition_by: Sequence[str] = (),
    ) -> None:
        self.path = path
        self.metadata = {METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()}
        self.compression: Compression = compression
        self.partition_by = list(partition_by)

    def write_part(
        self,
        index: int,
        schema: pa.Schema,
        batches: Iterable[pa.RecordBatch],
        *,
        dictionary: Sequence[str] = (),
        piece: int | None = None,
    ) -> list[str]:
        """Write one part; its file names relative to the staging folder.

        ``dictionary`` names the columns to dictionary-encode (see :func:`dictionary_columns`);
        ``piece`` numbers the parts of an input file scored in several tasks (``part-00000-001.parquet``).
        """
        schema = schema.with_metadata(self.metadata)
        stem = part_stem(index, piece)
        if self.partition_by:
            return self._write_partitioned(stem, schema, batches, dictionary)
        name = f"{stem}.parquet"
        part = PartWriter(os.path.join(self.path, name), schema, dictionary, compression=self.compression)
        for batch in batches:
            part.write(batch)
        part.close()
        return [name]

    def _write_partitioned(
        self, stem: str, schema: pa.Schema, batches: Iterable[pa.RecordBatch], dictionary: Sequence[str]
    ) -> list[str]:
        import pyarrow.dataset as ds  # 0.1 s of import time that unpartitioned runs skip

        written: list[str] = []
        try:
            ds.write_dataset(
                batches,
                self.path,
                schema=schema,
                format="parquet",
                partitioning=self.partition_by,
                partitioning_flavor="hive",
                basename_template=f"{stem}-{{i}}.parquet",
                existing_data_behavior="overwrite_or_ignore",
                preserve_order=True,
                max_rows_per_group=ROW_GROUP_ROWS,
                file_options=ds.ParquetFileFormat().make_write_options(
                    compression=self.compression, use_dictionary=[c for c in dictionary if c not in self.partition_by]
                ),
                file_visitor=lambda f: written.append(os.path.relpath(f.path, self.path)),
            )
        except (OSError, pa.ArrowException) as exc:
            msg = f"cannot write output {stem} into {self.path}: {exc}; check free space and permissions"
            raise OutputError(msg) from exc
        return sorted(written)


def committed_files(folder: str) -> list[str]:
    """Parquet files below ``folder`` (relative paths), skipping ``_``/``.`` names such as staging folders."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(("_", "."))]
        found += [
            os.path.relpath(os.path.join(dirpath, f), folder)
            for f in filenames
            if f.endswith(".parquet") and not f.startswith(("_", "."))
        ]
    return sorted(found)


def _remove_empty_dirs(folder: str) -> None:
    """Drop hive folders left empty by removed parts (never staging folders)."""
    for dirpath, _dirnames, _filenames in os.walk(folder, topdown=False):
        parts = os.path.relpath(dirpath, folder).split(os.sep)
        if dirpath != folder and not any(p.startswith(("_", ".")) for p in parts):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)


class PartWriter:
    """One output Parquet file: batches gathered into row groups of about ``ROW_GROUP_ROWS``.

    Large row groups keep downstream scans (DuckDB, Spark) fast; the bytes
    limit keeps memory bounded when the passthrough columns are wide.
    """

    def __init__(
        self, path: str, schema: pa.Schema, dictionary: Sequence[str], *, compression: Compression = "zstd"
    ) -> None:
        self.path = path
        self.schema = schema
        self._pending: list[pa.RecordBatch] = []
        self._rows = 0
        self._bytes = 0
        try:
            self._writer = pq.ParquetWriter(path, schema, compression=compression, use_dictionary=list(dictionary))
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
