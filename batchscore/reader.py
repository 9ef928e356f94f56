"""Parquet in: files, directories and globs -> projected pyarrow RecordBatches.

Inputs are resolved to a sorted list of files once, their footers are read up
front (schema, row counts, null statistics) so that a bad file fails the run
before the first row is scored, and then each file is streamed in batches of
the requested columns only.
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
import pyarrow.parquet as pq

from batchscore import manifest, storage
from batchscore.errors import InputDataError

log = logging.getLogger("batchscore")

_GLOB_CHARS = frozenset("*?[")
WHOLE_ROW_GROUP_ROWS = 1 << 18
"""Row groups up to this many rows are read whole; larger ones are streamed."""


@dataclass(frozen=True)
class InputFile:
    """One Parquet file to score, with what its footer says."""

    path: str
    schema: pa.Schema
    num_rows: int
    partitions: dict[str, str] = field(default_factory=dict)
    """Hive-style ``key=value`` folders above the file, as string columns."""
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

    def field(self, name: str) -> pa.Field:
        """The type of a column, partition keys being strings."""
        if name in self.schema.names:
            return self.schema.field(name)
        return pa.field(name, pa.string())


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


def scan(paths: Sequence[str]) -> list[InputFile]:
    """Read each file's footer: schema, row count, null statistics."""
    files = []
    for path in paths:
        try:
            pf = pq.ParquetFile(path)
            meta = pf.metadata
            schema = pf.schema_arrow
            stat = os.stat(path)
            fingerprint = manifest.footer_sha256(storage.resolve(path), stat.st_size)
        except (OSError, pa.ArrowException) as exc:
            msg = f"cannot read Parquet file {path}: {_one_line(exc)}; check that it is a complete Parquet file"
            raise InputDataError(msg) from exc
        files.append(
            InputFile(
                path=path,
                schema=schema,
                num_rows=meta.num_rows,
                partitions=hive_partitions(path),
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


def iter_batches(
    file: InputFile, columns: Sequence[str], *, batch_size: int, row_groups: Sequence[int] | None = None
) -> Iterator[pa.RecordBatch]:
    """Stream one file's projected columns (of ``row_groups`` only, if given); partition keys become string columns.

    Row groups of moderate size are read whole (pyarrow decodes their columns in
    parallel, faster and with less memory than ``iter_batches``' read-ahead) and
    sliced without copying; very large row groups are streamed in batches instead.
    """
    wanted = list(columns)
    in_file = [c for c in wanted if c in file.schema.names]
    try:
        pf = pq.ParquetFile(file.path, page_checksum_verification=True)
        if file.num_rows == 0:
            return
        meta = pf.metadata
        groups = list(range(meta.num_row_groups)) if row_groups is None else list(row_groups)
        largest = max(meta.row_group(g).num_rows for g in range(meta.num_row_groups))
        if largest <= max(WHOLE_ROW_GROUP_ROWS, batch_size):
            for group in groups:
                table = pf.read_row_group(group, columns=in_file, use_threads=True)
                for batch in table.to_batches(max_chunksize=batch_size):
                    yield batch if len(in_file) == len(wanted) else _with_partitions(batch, file, wanted)
        elif groups:
            for batch in pf.iter_batches(batch_size=batch_size, row_groups=groups, columns=in_file, use_threads=True):
                yield batch if len(in_file) == len(wanted) else _with_partitions(batch, file, wanted)
    except (OSError, pa.ArrowException) as exc:
        msg = f"cannot read Parquet file {file.path}: {_one_line(exc)}; check that it is a complete Parquet file"
        raise InputDataError(msg) from exc


def row_group_sizes(file: InputFile) -> list[tuple[int, int]]:
    """Rows and compressed bytes of each row group of a file, from its footer."""
    try:
        meta = pq.ParquetFile(file.path).metadata
    except (OSError, pa.ArrowException) as exc:
        msg = f"cannot read Parquet file {file.path}: {_one_line(exc)}; check that it is a complete Parquet file"
        raise InputDataError(msg) from exc
    sizes = []
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        sizes.append((group.num_rows, sum(group.column(c).total_compressed_size for c in range(group.num_columns))))
    return sizes


def _with_partitions(batch: pa.RecordBatch, file: InputFile, wanted: list[str]) -> pa.RecordBatch:
    arrays = []
    for name in wanted:
        if name in file.schema.names:
            arrays.append(batch.column(name))
        else:
            arrays.append(pa.repeat(pa.scalar(file.partitions[name], pa.string()), batch.num_rows))
    return pa.RecordBatch.from_arrays(arrays, names=wanted)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
