"""Parquet in: files, directories and globs -> projected pyarrow RecordBatches.

Inputs are resolved to a sorted list of files once, their footers are read up
front (schema, row counts, null statistics) so that a bad file fails the run
before the first row is scored, and then each file is streamed in batches of
the requested columns only.

Hive folders (``.../month=7/ds=2026-11-20/part-0.parquet``) become columns typed
as DuckDB and Polars type them: ``int64`` when every file's value for that key
is an integer, ``date32`` when every value is a ``YYYY-MM-DD`` date, ``string``
otherwise. pyarrow's cast parses the values; a type is chosen only when it
gives every folder name back unchanged, so ``store=0042`` stays the string
``"0042"``. ``__HIVE_DEFAULT_PARTITION__`` (how Hive and Spark write a null) is a null.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batchscore import manifest, storage
from batchscore.errors import InputDataError

log = logging.getLogger("batchscore")

_GLOB_CHARS = frozenset("*?[")
WHOLE_ROW_GROUP_ROWS = 1 << 18
"""Row groups up to this many rows are read whole; larger ones are streamed."""
STREAM_BUFFER_BYTES = 1 << 20
"""Read-ahead per column when streaming a large row group: its column chunks are read a page at a time
through buffers of this size instead of whole, so memory does not grow with the row group."""
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


@dataclass(frozen=True)
class InputFile:
    """One Parquet file to score, with what its footer says."""

    path: str
    schema: pa.Schema
    num_rows: int
    partitions: dict[str, str] = field(default_factory=dict)
    """Hive-style ``key=value`` folders above the file: the folder names' values, as written."""
    partition_types: dict[str, pa.DataType] = field(default_factory=dict)
    """The type of each partition key, inferred over every input file (string where absent)."""
    null_counts: dict[str, int | None] = field(default_factory=dict)
    """Nulls per column from the row-group statistics; None where unknown."""
    size: int = 0
    mtime_ns: int = 0
    fingerprint: str = ""
    """sha256 of the Parquet footer: any rewrite of the data changes it, whatever the size and mtime."""

    @property
    def columns(self) -> list[str]:
        """Every column a reader can ask for: the file's, then its partition keys."""
        names: list[str] = self.schema.names
        return names + [k for k in self.partitions if k not in names]

    @property
    def full_schema(self) -> pa.Schema:
        """The schema of :attr:`columns`: the file's fields, then its typed partition keys."""
        return pa.schema([self.field(name) for name in self.columns])

    def field(self, name: str) -> pa.Field:
        """The type of a column, partition keys included."""
        if name in self.schema.names:
            return self.schema.field(name)
        return pa.field(name, self.partition_types.get(name, pa.string()))

    def partition_value(self, name: str) -> pa.Scalar:
        """A partition key's value in this file, of its inferred type."""
        return _typed(self.partitions[name], self.field(name).type)


def resolve_inputs(inputs: Sequence[str]) -> list[str]:
    """Expand files, directories (recursive) and globs to a sorted, unique list of absolute paths.

    Names starting with ``_`` or ``.`` (``_SUCCESS``, ``.crc``, staging folders)
    are skipped below a directory, as Spark and DuckDB do, and so are batchscore
    output folders nested below it (a folder holding a ``_batchscore.json``):
    scores written inside an input folder are never read back as input.
    """
    found: list[str] = []
    for raw in inputs:
        matches: list[str]
        if any(ch in raw for ch in _GLOB_CHARS):
            base = _literal_prefix(raw)
            matches = [p for p in glob.glob(raw, recursive=True) if os.path.isfile(p)]
            matches = [p for p in matches if not any(_hidden(part) for part in Path(p).relative_to(base).parts)]
            matches = _outside_outputs(matches, base)
            if not matches:
                msg = f"input glob {raw!r} matches no file; check the pattern and that the data has landed"
                raise InputDataError(msg)
        elif os.path.isdir(raw):
            matches = _outside_outputs(list(_walk_parquet(raw)), raw)
            if not matches:
                msg = f"input directory {raw!r} holds no *.parquet file; check the path and that the data has landed"
                raise InputDataError(msg)
        elif os.path.isfile(raw):
            matches = [raw]
        else:
            msg = f"input {raw!r} does not exist; check the path (files, directories and globs are accepted)"
            raise InputDataError(msg)
        found.extend(os.path.abspath(p) for p in matches)
    return sorted(set(found))


def _outside_outputs(paths: list[str], base: str) -> list[str]:
    """Drop files inside batchscore output folders nested below ``base`` (``base`` itself may be one)."""
    is_output: dict[str, bool] = {}
    root = os.path.abspath(base)
    kept = []
    for path in paths:
        folder = os.path.dirname(os.path.abspath(path))
        nested = False
        while folder != root and folder.startswith(root + os.sep):
            if folder not in is_output:
                where = storage.resolve(folder)
                is_output[folder] = where.child(manifest.MANIFEST).exists() or where.child("_batchscore").is_dir()
                if is_output[folder]:
                    log.info("not reading %s: it is a batchscore output folder inside the input %s", folder, base)
            if is_output[folder]:
                nested = True
                break
            folder = os.path.dirname(folder)
        if not nested:
            kept.append(path)
    return kept


def _literal_prefix(pattern: str) -> str:
    """The folder a glob starts from: its leading components without wildcards."""
    parts = Path(pattern).parts
    literal = []
    for part in parts:
        if any(ch in part for ch in _GLOB_CHARS):
            break
        literal.append(part)
    return str(Path(*literal)) if literal else "."


def _hidden(name: str) -> bool:
    return name.startswith(("_", "."))


def _walk_parquet(root: str) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not _hidden(d)]
        for name in filenames:
            if name.endswith(".parquet") and not _hidden(name):
                yield os.path.join(dirpath, name)


def hive_partitions(path: str) -> dict[str, str]:
    """``key=value`` folder names in a path, outermost first (values URL-unescaped)."""
    parts: dict[str, str] = {}
    for part in Path(path).parent.parts:
        key, sep, value = part.partition("=")
        if sep and key and not _hidden(key):
            parts[unquote(key)] = unquote(value)
    return parts


def partition_types(partitions: Sequence[dict[str, str]]) -> dict[str, pa.DataType]:
    """Each hive key's type over all files' values: int64, else date32, else string (see the module doc)."""
    values: dict[str, list[str]] = {}
    for folders in partitions:
        for key, value in folders.items():
            if value != HIVE_NULL:
                values.setdefault(key, []).append(value)
    types = {key: pa.string() for folders in partitions for key in folders}
    for key, seen in values.items():
        for candidate in (pa.int64(), pa.date32()):
            if _parses_back(seen, candidate):
                types[key] = candidate
                break
    return types


def _parses_back(values: list[str], dtype: pa.DataType) -> bool:
    """True when pyarrow parses every value as ``dtype`` and prints each back unchanged."""
    strings = pa.array(values, pa.string())
    try:
        parsed = pc.cast(strings, dtype)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return bool(pc.all(pc.equal(pc.cast(parsed, pa.string()), strings)).as_py())


def _typed(value: str, dtype: pa.DataType) -> pa.Scalar:
    if value == HIVE_NULL:
        return pa.scalar(None, dtype)
    return pc.cast(pa.scalar(value, pa.string()), dtype)


def scan(paths: Sequence[str]) -> list[InputFile]:
    """Read each file's footer: schema, row count, null statistics; type the hive keys over all of them."""
    files = []
    folders = [hive_partitions(path) for path in paths]
    types = partition_types(folders)
    for path, partitions in zip(paths, folders, strict=True):
        try:
            pf = pq.ParquetFile(path)
            meta = pf.metadata
            schema = pf.schema_arrow
            stat = os.stat(path)
            fingerprint = manifest.footer_sha256(storage.resolve(path), stat.st_size)
        except (OSError, pa.ArrowException) as exc:
            msg = f"cannot read Parquet file {path}: {_one_line(exc)}; check that it is a complete Parquet file"
            raise InputDataError(msg) from exc
        twice = sorted({name for name in schema.names if schema.names.count(name) > 1})
        if twice:
            msg = (
                f"Parquet file {path} has column name(s) {', '.join(map(repr, twice))} more than once; "
                "batchscore needs unique column names: rename the duplicates where the file is written"
            )
            raise InputDataError(msg)
        files.append(
            InputFile(
                path=path,
                schema=schema,
                num_rows=meta.num_rows,
                partitions=partitions,
                partition_types={k: types[k] for k in partitions},
                null_counts=_null_counts(meta),
                size=stat.st_size,
                mtime_ns=stat.st_mtime_ns,
                fingerprint=fingerprint,
            )
        )
    return files


def _null_counts(meta: pq.FileMetaData) -> dict[str, int | None]:
    counts: dict[str, int | None] = {}
    for rg in range(meta.num_row_groups):
        group = meta.row_group(rg)
        for i in range(group.num_columns):
            col = group.column(i)
            name = col.path_in_schema
            stats = col.statistics
            known = stats is not None and stats.has_null_count
            if not known:
                counts[name] = None
            elif name not in counts or counts[name] is not None:
                counts[name] = (counts.get(name) or 0) + stats.null_count
    return counts


def iter_batches(file: InputFile, columns: Sequence[str], *, batch_size: int) -> Iterator[pa.RecordBatch]:
    """Stream one file's projected columns; partition keys become constant string columns.

    Row groups of moderate size are read whole (pyarrow decodes their columns in
    parallel, faster and with less memory than ``iter_batches``' read-ahead) and
    sliced without copying; very large row groups are streamed in batches instead.
    """
    wanted = list(columns)
    in_file = [c for c in wanted if c in file.schema.names]
    try:
        if file.num_rows == 0:
            return
        meta = pq.read_metadata(file.path)
        largest = max(meta.row_group(g).num_rows for g in range(meta.num_row_groups))
        if largest <= max(WHOLE_ROW_GROUP_ROWS, batch_size):
            pf = pq.ParquetFile(file.path, metadata=meta, page_checksum_verification=True)
            for group in range(meta.num_row_groups):
                table = pf.read_row_group(group, columns=in_file, use_threads=True)
                for batch in table.to_batches(max_chunksize=batch_size):
                    yield batch if len(in_file) == len(wanted) else _with_partitions(batch, file, wanted)
        else:
            # A buffered stream reads each column chunk a page at a time: without it (buffer_size=0)
            # pyarrow loads whole column chunks, and a 15M-row group costs its full compressed size.
            pf = pq.ParquetFile(
                file.path,
                metadata=meta,
                buffer_size=STREAM_BUFFER_BYTES,
                pre_buffer=False,
                page_checksum_verification=True,
            )
            for batch in pf.iter_batches(batch_size=batch_size, columns=in_file, use_threads=True):
                yield batch if len(in_file) == len(wanted) else _with_partitions(batch, file, wanted)
    except (OSError, pa.ArrowException) as exc:
        msg = f"cannot read Parquet file {file.path}: {_one_line(exc)}; check that it is a complete Parquet file"
        raise InputDataError(msg) from exc


def _with_partitions(batch: pa.RecordBatch, file: InputFile, wanted: list[str]) -> pa.RecordBatch:
    arrays = []
    for name in wanted:
        if name in file.schema.names:
            arrays.append(batch.column(name))
        else:
            arrays.append(pa.repeat(file.partition_value(name), batch.num_rows))
    return pa.RecordBatch.from_arrays(arrays, names=wanted)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
