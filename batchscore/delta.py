"""Delta Lake out (``format="delta"``): one streaming write, one atomic commit per run.

A run replaces a *unit* of the table: the rows whose first partition column
(``ds``) has a value the run's inputs hold, as Spark's ``replaceWhere``; the
whole table when it is not partitioned. Its states:

- **checked** (:meth:`DeltaOutput.open`, before the first row): the table's
  partitioning and schema fit this run; ``--mode`` allows replacing the unit;
  the run's application transaction is not there already (a retried run
  whose first attempt committed stops here: nothing to do).
- **written**: one ``write_deltalake`` call, fed by a ``RecordBatchReader``
  over the scored batches as they come (memory stays flat), writes data files
  no version references yet, so no reader sees them.
- **committed** (:meth:`DeltaOutput.commit`): the end of the stream lets
  delta-rs publish the next log entry, put-if-absent: readers see the old
  unit before it and the new one after, never both, never neither. The entry
  carries the application transaction (app id from the job, output and unit;
  version from the run's fingerprint) and batchscore's lineage.

A run that fails ends the stream with an error instead: nothing is committed,
and the files written so far stay unreferenced. The next run removes them
(``vacuum``, full mode) once they are older than the table's
``delta.deletedFileRetentionDuration`` (7 days by default), the age Delta
deems safe from a write still in flight; files older versions reference are
kept, so time travel is never cut short.

Two runs committing at once: delta-rs retries a commit that does not clash
(other days); one that does fails here with :class:`OutputError` (exit 5).

``deltalake`` is imported only here and only when used (``batchscore[delta]``).
Paths and URIs reach it unchanged; the run's storage options (pyarrow's names) are said in delta-rs's
words by :func:`batchscore._deltastore.delta_options`, and on S3 a store that would not keep two commits
apart is refused before the first row is read (:func:`batchscore._deltastore.check_safe_commits`).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import os
import queue
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from batchscore import _deltastore, storage
from batchscore.errors import JobSpecError, OutputError, OutputExistsError
from batchscore.reader import InputFile, iter_batches
from batchscore.spec import Compression, Mode, SchemaMode

log = logging.getLogger("batchscore")

INSTALL_HINT = "pip install 'batchscore[delta]'"
METADATA_KEY = "batchscore"
"""The commit info field that holds batchscore's lineage (a JSON object)."""
QUEUE_DEPTH = 1
_POLL_S = 0.1
_COMPRESSION = {"zstd": "ZSTD", "snappy": "SNAPPY", "gzip": "GZIP", "lz4": "LZ4_RAW", "brotli": "BROTLI"}
_WIDER = {pa.uint8(): pa.int16(), pa.uint16(): pa.int32(), pa.uint32(): pa.int64(), pa.float16(): pa.float32()}
"""Types Delta Lake has no match for, widened without changing a value."""
_COMMIT = object()
_ABORT = object()


def deltalake() -> ModuleType:
    """The ``deltalake`` module, or a one-line error saying how to install it."""
    try:
        module = importlib.import_module("deltalake")
        importlib.import_module("deltalake.exceptions")
    except ImportError as exc:
        msg = f"--format delta needs the deltalake package, which is not installed: {INSTALL_HINT}"
        raise JobSpecError(msg) from exc
    return module


@dataclass(frozen=True)
class Unit:
    """The slice of the table one run replaces: some values of the first partition column, or everything."""

    column: str | None
    values: tuple[Any, ...] = ()

    @property
    def label(self) -> str:
        """``ds=2026-11-20`` (several values comma-separated), or ``the whole table``."""
        if self.column is None:
            return "the whole table"
        return f"{self.column}=" + ",".join("null" if v is None else str(v) for v in self.values)

    def predicate(self, dtype: pa.DataType) -> str | None:
        """The SQL condition that selects the unit (``"ds" = '2026-11-20'``); None for the whole table."""
        if self.column is None:
            return None
        name = '"' + self.column.replace('"', '""') + '"'
        known = [_literal(v, dtype, column=self.column) for v in self.values if v is not None]
        terms = []
        if len(known) == 1:
            terms.append(f"{name} = {known[0]}")
        elif known:
            terms.append(f"{name} IN ({', '.join(known)})")
        if any(v is None for v in self.values):
            terms.append(f"{name} IS NULL")
        return " OR ".join(terms) if terms else "false"

    def holds(self, value: Any) -> bool:
        """Whether a partition value (as the Delta log gives it) is in the unit."""
        return self.column is None or value in self.values or str(value) in {str(v) for v in self.values}


def _literal(value: Any, dtype: pa.DataType, *, column: str) -> str:
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype):
        return "'" + str(value).replace("'", "''") + "'"
    if pa.types.is_dictionary(dtype):
        return _literal(value, dtype.value_type, column=column)
    if pa.types.is_boolean(dtype):
        return "true" if value else "false"
    if pa.types.is_integer(dtype):
        return str(int(value))
    if pa.types.is_date(dtype):
        return f"'{value.isoformat()}'"
    msg = (
        f"cannot partition a Delta table by {column!r} of type {dtype}: "
        "partition by a string, integer, boolean or date column (a day: ds)"
    )
    raise JobSpecError(msg)


def unit_of(files: Sequence[InputFile], partition_by: Sequence[str]) -> Unit:
    """The unit the inputs fill: the values of the first partition column they hold (folder names, or read)."""
    if not partition_by:
        return Unit(None)
    column = partition_by[0]
    values: set[Any] = set()
    for file in files:
        if column not in file.columns:
            msg = (
                f"a Delta table's first partition column names the rows a run replaces, so it must be an input "
                f"column (a day: ds), but {column!r} is not in {file.path}; put a kept column first in --partition-by"
            )
            raise JobSpecError(msg)
        if column in file.partitions and column not in file.schema.names:
            values.add(file.partition_value(column).as_py())  # typed as the reader types it (issue 9)
            continue
        for batch in iter_batches(file, [column], batch_size=1 << 20):
            values.update(pc.unique(batch.column(0)).to_pylist())
    return Unit(column, tuple(sorted(values, key=lambda v: (v is None, str(v)))))


def delta_schema(schema: pa.Schema) -> pa.Schema:
    """The Arrow schema written to Delta: the same, with unsigned ints and float16 widened (Delta has neither)."""
    fields = []
    for f in schema:
        if f.type == pa.uint64():
            msg = (
                f"column {f.name!r} is uint64, which a Delta table cannot hold without losing values; "
                "cast it to int64 upstream, drop it from --keep, or use --format parquet"
            )
            raise JobSpecError(msg)
        fields.append(f.with_type(_WIDER.get(f.type, f.type)))
    return pa.schema(fields)


def fingerprint(header: Mapping[str, Any], unit: Unit) -> int:
    """What the unit's scores depend on (inputs, model, options), as a 60-bit application transaction version."""
    inputs = [(i.get("path"), i.get("fingerprint")) for i in header.get("inputs", [])]
    blob = json.dumps(
        [inputs, header.get("model_sha256"), header.get("spec_hash"), unit.label], sort_keys=True, default=str
    )
    return int(hashlib.sha256(blob.encode()).hexdigest()[:15], 16)


def app_id(uri: str, job: str | None, unit: Unit) -> str:
    """``batchscore:<job>:<hash of job and table>:<unit>``: one application transaction per job, table and day."""
    name = os.path.splitext(os.path.basename(job))[0] if job else "score"
    where = hashlib.sha256(f"{_absolute(job) if job else ''}\n{_absolute(uri)}".encode()).hexdigest()[:12]
    label = unit.label if len(unit.label) <= 64 else "sha256:" + hashlib.sha256(unit.label.encode()).hexdigest()[:16]
    return f"batchscore:{name}:{where}:{label}"


def _absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


def first_line(exc: BaseException) -> str:
    """An exception as one line, without the Python traceback delta-rs appends after "Detail:"."""
    text = str(exc).split(" Detail: Python exception")[0].strip().splitlines()
    return " ".join(text[0].split()) if text else type(exc).__name__


class _AbortedError(Exception):
    """Ends the stream of a failed run, so that delta-rs commits nothing (it reaches delta-rs, not the user)."""


class DeltaOutput:
    """A Delta table as the output of one run: check, stream, commit once.

    The pipeline drives it like :class:`batchscore.writer.OutputDir` (``open``,
    ``write_part`` and ``finish_part`` per input file, ``commit``, ``close``);
    every part flows into one ``write_deltalake`` call in a thread of its own.
    """

    def __init__(
        self,
        path: str,
        *,
        mode: Mode,
        run_id: str,
        metadata: dict[str, Any],
        schema: pa.Schema,
        compression: Compression = "zstd",
        partition_by: Sequence[str] | None = None,
        header: dict[str, Any] | None = None,
        schema_mode: SchemaMode = "strict",
        storage_options: Mapping[str, object] | None = None,
    ) -> None:
        self.path = path
        self.mode = mode
        self.run_id = run_id
        self.metadata = dict(metadata)
        self.schema = delta_schema(schema)
        self.compression = compression
        self.partition_by = list(partition_by or ())
        self.header = dict(header or {})
        self.schema_mode = schema_mode
        self.options = dict(storage_options or {})
        """The run's storage options, pyarrow's names (as every other path of the run takes them)."""
        self.storage_options = _deltastore.delta_options(path, self.options)
        """The same, in delta-rs's names: what deltalake gets; None for a local table."""
        self.parts: dict[int, dict[str, Any]] = {}
        """Parts streamed by this run, by index (nothing is kept from before: a commit is all or nothing)."""
        self.complete = False
        """True when this very run (same inputs, model and options) is already committed: nothing to do."""
        self.unit = Unit(None)
        self.predicate: str | None = None
        """The SQL condition selecting the unit in the table, as ``replaceWhere``; None: the whole table."""
        self.app_id = ""
        self.txn_version = 0
        self.version: int | None = None
        """The table's version when checked, then the version this run committed; None: no table yet."""
        self.existing_rows = 0
        """Rows the unit holds before this run."""
        self._dl: ModuleType | None = None
        self._queue: queue.Queue[object] = queue.Queue(maxsize=QUEUE_DEPTH)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._rows = 0

    # -- checking -------------------------------------------------------------------------------

    def check(self, files: Sequence[InputFile]) -> list[int]:
        """Everything before the first row, read-only: raise if the table or the mode forbid the run.

        Returns the indices of the files to score: all of them, or none when
        this run is already committed (its application transaction is there).
        """
        dl = self._dl = deltalake()
        self.unit = unit_of(files, self.partition_by)
        column = self.unit.column
        self.predicate = self.unit.predicate(self.schema.field(column).type) if column is not None else None
        self.app_id = app_id(self.path, self.header.get("job_file"), self.unit)
        self.txn_version = fingerprint(self.header, self.unit)
        table = self._table(dl)
        if table is None:
            self._check_new_location()
            return list(range(len(files)))
        self.version = table.version()
        self._check_layout(table)
        if self.mode != "overwrite" and table.transaction_version(self.app_id) == self.txn_version:
            self.complete = True
            log.info(
                "%s of Delta table %s is already committed by this run (same inputs, model and options; "
                "application transaction %s); nothing to do",
                self.unit.label,
                self.path,
                self.app_id,
            )
            return []
        self.existing_rows = self._unit_rows(table)
        if self.existing_rows and self.mode == "error":
            msg = (
                f"{self.unit.label} of Delta table {self.path} already holds {self.existing_rows:,} scored row(s) "
                f"(table version {self.version}); pass --mode overwrite to replace them, --mode resume to replace "
                "them unless this same run wrote them, or choose another --out"
            )
            raise OutputExistsError(msg)
        return list(range(len(files)))

    def _table(self, dl: ModuleType) -> Any:
        try:
            return dl.DeltaTable(self.path, storage_options=self.storage_options)
        except dl.exceptions.TableNotFoundError:
            return None
        except (dl.exceptions.DeltaError, OSError) as exc:
            said = _deltastore.explain(exc, self.path) or f"{first_line(exc)}; check the path, or choose another --out"
            msg = f"cannot read Delta table {self.path}: {said}"
            raise OutputError(msg) from exc

    def _check_new_location(self) -> None:
        """No table yet: the place must not be a file or a folder holding something else (Parquet parts)."""
        where = storage.resolve(self.path, self.options)
        try:
            if not where.exists():
                return
            folder = where.is_dir()
            names = [entry.name for entry in where.list_dir()] if folder else []
        except OSError as exc:
            msg = f"cannot read Delta table {self.path}: {storage.describe_os_error(exc)}"
            raise OutputError(msg) from exc
        if not folder or not all(_delta_in_the_making(n) for n in names):
            what = "a file" if not folder else "a folder that is not a Delta table (no _delta_log)"
            msg = f"output {self.path} is {what}; choose another --out for the Delta table, or remove it"
            raise OutputExistsError(msg)

    def _check_layout(self, table: Any) -> None:
        """The table's partitioning and schema against this run's output."""
        have = list(table.metadata().partition_columns)
        if have != self.partition_by:
            msg = (
                f"Delta table {self.path} is partitioned by {', '.join(have) or 'nothing'}, "
                f"this run by {', '.join(self.partition_by) or 'nothing'}; "
                f"pass --partition-by {','.join(have) or '(none)'} to match it, or write a new table (another --out)"
            )
            raise OutputError(msg)
        assert self._dl is not None
        old = pa.schema(table.schema().to_arrow())
        new = pa.schema(self._dl.Schema.from_arrow(self.schema).to_arrow())
        old_types = {f.name: f.type for f in old}
        new_types = {f.name: f.type for f in new}
        changed = [f"{n} {old_types[n]} -> {t}" for n, t in new_types.items() if n in old_types and old_types[n] != t]
        added = [n for n in new_types if n not in old_types]
        missing = [n for n in old_types if n not in new_types]
        if changed or (self.schema_mode == "strict" and (added or missing)):
            found = "; ".join(
                part
                for part in (
                    f"new: {', '.join(added)}" if added else "",
                    f"missing: {', '.join(missing)}" if missing else "",
                    f"type changed: {', '.join(changed)}" if changed else "",
                )
                if part
            )
            hint = (
                "write it to a new table (another --out)"
                if changed
                else "write it to a new table (another --out), or evolve the table's schema explicitly with "
                "--schema-mode merge (new columns are added; rows without them read null)"
            )
            msg = (
                f"this run's output does not fit Delta table {self.path} ({found}); table: {_columns(old)}; "
                f"this run: {_columns(new)}; {hint}"
            )
            raise OutputError(msg)

    def _unit_rows(self, table: Any) -> int:
        actions = pa.table(table.get_add_actions(flatten=True))
        if actions.num_rows == 0:
            return 0
        rows = actions.column("num_records").to_pylist()
        if self.unit.column is None:
            return sum(r or 0 for r in rows)
        values = actions.column(f"partition.{self.unit.column}").to_pylist()
        return sum(r or 0 for r, v in zip(rows, values, strict=True) if self.unit.holds(v))

    def open(self, files: Sequence[InputFile]) -> list[int]:
        """Check (see :meth:`check`) and that the store keeps commits apart, then remove files failed runs left."""
        todo = self.check(files)
        if not self.complete:
            _deltastore.check_safe_commits(self.path, self.options)
        if not self.complete and self.version is not None:
            self._remove_orphans()
        return todo

    def _remove_orphans(self) -> None:
        """``vacuum`` in full mode: files no version in the log references, older than the table's retention."""
        assert self._dl is not None
        try:
            table = self._dl.DeltaTable(self.path, storage_options=self.storage_options)
            keep = [int(h["version"]) for h in table.history() if "version" in h]
            found = table.vacuum(dry_run=True, full=True, keep_versions=keep)
            if found:
                table.vacuum(dry_run=False, full=True, keep_versions=keep)
                log.info(
                    "removed %d data file(s) of %s that no version references (left by failed runs)",
                    len(found),
                    self.path,
                )
        except (self._dl.exceptions.DeltaError, OSError) as exc:
            log.warning("could not vacuum %s (%s); it will be tried again by the next run", self.path, first_line(exc))

    # -- writing --------------------------------------------------------------------------------

    def write_part(
        self,
        index: int,
        schema: pa.Schema,
        batches: Iterable[pa.RecordBatch],
        *,
        dictionary: Sequence[str] = (),
        piece: int | None = None,
    ) -> list[str]:
        """Hand one part's batches (or one piece's) to the table's single write; data file names are delta-rs's,
        so none returned."""
        if self._thread is None:
            self._start(dictionary)
        for batch in batches:
            self._put(batch if batch.schema == self.schema else batch.cast(self.schema))
        return []

    def finish_part(self, index: int, entry: dict[str, Any]) -> None:
        """A part is streamed (not committed: the commit is one, at the end)."""
        self.parts[index] = entry

    def _start(self, dictionary: Sequence[str]) -> None:
        dl = self._dl or deltalake()
        encoded = [c for c in dictionary if c not in self.partition_by]
        properties = dl.WriterProperties(
            compression=_COMPRESSION.get(self.compression, "UNCOMPRESSED"),
            default_column_properties=dl.ColumnProperties(dictionary_enabled=False),
            column_properties={c: dl.ColumnProperties(dictionary_enabled=True) for c in encoded},
        )
        commit = dl.CommitProperties(
            custom_metadata={METADATA_KEY: self.lineage()},
            app_transactions=[dl.Transaction(self.app_id, self.txn_version)],
        )
        reader = pa.RecordBatchReader.from_batches(self.schema, self._batches())

        def write() -> None:
            try:
                dl.write_deltalake(
                    self.path,
                    reader,
                    mode="overwrite",
                    predicate=self.predicate,
                    partition_by=self.partition_by or None,
                    schema_mode="merge" if self.schema_mode == "merge" else None,
                    storage_options=self.storage_options,
                    writer_properties=properties,
                    commit_properties=commit,
                )
            except BaseException as exc:  # handed to the pipeline's threads
                self._error = exc

        self._thread = threading.Thread(target=write, name="batchscore-delta", daemon=True)
        self._thread.start()

    def lineage(self) -> dict[str, Any]:
        """What the commit records about the run (its ``batchscore`` commit info field)."""
        header = self.header
        rows_in = sum(int(i.get("rows", 0)) for i in header.get("inputs", []))
        spec = header.get("spec") or {}
        return {
            "run_id": self.run_id,
            "job": header.get("job_file"),
            "model": header.get("model"),
            "model_sha256": header.get("model_sha256"),
            "spec_hash": header.get("spec_hash"),
            "onnxruntime_version": header.get("onnxruntime_version"),
            "provider": header.get("provider"),
            "batchscore_version": header.get("batchscore_version"),
            "features": header.get("features"),
            "keep": header.get("keep"),
            "partition": self.unit.label,
            "app_id": self.app_id,
            "inputs": len(header.get("inputs", [])),
            "rows_in": rows_in,
            # every input row is written, unless a filter drops some (then Delta's num_added_rows tells)
            "rows": None if spec.get("filter") else rows_in,
            "started_at": header.get("started_at"),
        }

    def _batches(self) -> Iterator[pa.RecordBatch]:
        while True:
            item = self._queue.get()
            if item is _COMMIT:
                return
            if item is _ABORT:
                raise _AbortedError("the run failed; nothing is committed")
            assert isinstance(item, pa.RecordBatch)
            self._rows += item.num_rows
            yield item

    def _put(self, item: object) -> None:
        assert self._thread is not None
        while True:
            if not self._thread.is_alive():
                raise (
                    self._translate(self._error)
                    if self._error
                    else OutputError(
                        f"the Delta writer of {self.path} stopped before the end of the data; nothing was committed"
                    )
                )
            try:
                self._queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    # -- committing -----------------------------------------------------------------------------

    def commit(self, parts: int, lineage: dict[str, Any]) -> list[str]:
        """End the stream: delta-rs publishes the next log entry, or nothing if it fails."""
        if sorted(self.parts) != list(range(parts)):
            msg = f"internal error: {len(self.parts)} of {parts} parts streamed to Delta table {self.path}"
            raise OutputError(msg)
        if self._thread is None:
            self._start(())
        self._put(_COMMIT)
        self._join()
        if self._error is not None:
            raise self._translate(self._error)
        assert self._dl is not None
        table = self._dl.DeltaTable(self.path, storage_options=self.storage_options)
        self.version = table.version()
        log.info(
            "committed %s (%s row(s)) to Delta table %s as version %d",
            self.unit.label,
            f"{self._rows:,}",
            self.path,
            self.version,
        )
        return [str(u) for u in table.file_uris() if self.unit.column is None or self._in_unit(str(u))]

    def _in_unit(self, uri: str) -> bool:
        prefix = f"{self.unit.column}="
        for part in uri.replace("\\", "/").split("/"):
            if part.startswith(prefix):
                from urllib.parse import unquote

                return self.unit.holds(unquote(part[len(prefix) :]))
        return False

    def _join(self) -> None:
        assert self._thread is not None
        while self._thread.is_alive():
            self._thread.join(_POLL_S)

    def _translate(self, exc: BaseException) -> OutputError:
        if isinstance(exc, OutputError):
            return exc
        dl = self._dl
        if dl is not None and isinstance(exc, dl.exceptions.CommitFailedError):
            msg = (
                f"another run committed to {self.unit.label} of Delta table {self.path} while this one was writing "
                f"({first_line(exc)}); this run committed nothing: re-run it once the other has finished"
            )
        elif dl is not None and isinstance(exc, dl.exceptions.SchemaMismatchError):
            msg = (
                f"this run's output does not fit Delta table {self.path} ({first_line(exc)}); "
                "write it to a new table (another --out), or pass --schema-mode merge to add new columns"
            )
        else:
            said = _deltastore.explain(exc, self.path) or f"{first_line(exc)}; check free space and permissions"
            msg = f"cannot write Delta table {self.path}: {said}"
        error = OutputError(msg)
        error.__cause__ = exc
        return error

    def close(self) -> None:
        """If the stream is still open (the run failed), end it with an error: delta-rs commits nothing."""
        if self._thread is None or not self._thread.is_alive():
            return
        with contextlib.suppress(OutputError):
            self._put(_ABORT)
        self._join()
        log.debug("ended the stream to Delta table %s without a commit", self.path)

    # -- describing -----------------------------------------------------------------------------

    def plan(self, files: Sequence[InputFile]) -> str:
        """What :meth:`open` would lead to, for ``--dry-run``."""
        if self.complete:
            return f"nothing to do: {self.unit.label} is already committed by this run (same inputs, model, options)"
        verb = "replace" if self.existing_rows else "write"
        where = f"version {self.version}" if self.version is not None else "a new table"
        rows = f" ({self.existing_rows:,} row(s) there now)" if self.existing_rows else ""
        return f"score {len(files)} file(s) and {verb} {self.unit.label}{rows} of {where} in one commit"


def _columns(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name}: {f.type}" for f in schema)


_DELTA_DATA = re.compile(r"part-\d+-[0-9a-f-]+-c\d+(\.\w+)?\.parquet")


def _delta_in_the_making(name: str) -> bool:
    """What another run's first write to a new table leaves before its log exists: its data files, in hive
    folders or not, or the log folder itself (two first nights racing both see a folder with no table yet)."""
    return (
        name in ("_delta_log", _deltastore.PROBE_FOLDER)  # the probe of a run killed while it tried the store
        or ("=" in name and not name.startswith(("_", ".")))
        or bool(_DELTA_DATA.fullmatch(name))
    )
