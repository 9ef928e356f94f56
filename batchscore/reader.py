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

import dataclasses
import hashlib
import logging
import struct
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from batchscore import manifest, storage
from batchscore.errors import InputDataError

log = logging.getLogger("batchscore")

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
    location: storage.Location | None = field(default=None, compare=False, repr=False)
    """Where the file is (local disk or an object store); None: the local path ``path``."""

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


class Found(NamedTuple):
    """An input file as named to the user (a path as given, or a URI) and what its listing said."""

    name: str
    info: storage.FileInfo


def resolve_inputs(inputs: Sequence[str], *, options: Mapping[str, Any] | None = None) -> list[str]:
    """Expand files, directories (recursive) and globs to a sorted, unique list of absolute paths (or URIs).

    Names starting with ``_`` or ``.`` (``_SUCCESS``, ``.crc``, staging folders)
    are skipped below a directory, as Spark and DuckDB do, and so are batchscore
    output folders nested below it (a folder holding a ``_batchscore.json``):
    scores written inside an input folder are never read back as input. Inputs
    may be local paths or URIs (``s3://bucket/prefix``); ``options`` configure the store.
    """
    return [found.name for found in find_inputs(inputs, options=options)]


def find_inputs(inputs: Sequence[str], *, options: Mapping[str, Any] | None = None) -> list[Found]:
    """:func:`resolve_inputs`, keeping each file's size and mtime from the listing (no second request)."""
    found: dict[str, storage.FileInfo] = {}
    for raw in inputs:
        try:
            matches = _expand(raw, options)
        except OSError as exc:
            msg = f"cannot list input {raw!r}: {storage.describe_os_error(exc)}"
            raise InputDataError(msg) from exc
        found.update(matches)
    return [Found(name, found[name]) for name in sorted(found)]


def _expand(raw: str, options: Mapping[str, Any] | None) -> list[tuple[str, storage.FileInfo]]:
    base, pattern = storage.split_glob(raw)
    if pattern is not None:
        folder = storage.resolve(base, options)
        matches = _glob(folder, pattern, raw)
        if not matches:
            msg = f"input glob {raw!r} matches no file; check the pattern and that the data has landed"
            raise InputDataError(msg + _missing_bucket(folder))
        return [(f.location.uri, f) for f in matches]
    where = storage.resolve(raw, options)
    if where.is_dir():
        matches = [f for f in _outside_outputs(where, raw) if f.location.name.endswith(".parquet")]
        if not matches:
            msg = f"input directory {raw!r} holds no *.parquet file; check the path and that the data has landed"
            raise InputDataError(msg)
        return [(f.location.uri, f) for f in matches]
    info = where.info()
    if info is None:
        msg = f"input {raw!r} does not exist; check the path (files, directories and globs are accepted)"
        raise InputDataError(msg + _missing_bucket(where))
    return [(where.uri, info)]


def _glob(folder: storage.Location, pattern: str, given: str) -> list[storage.FileInfo]:
    """Files below ``folder`` matching ``pattern``, hidden names and nested outputs skipped.

    On local disk, without ``**``, the pattern is followed one level at a time (one listing per folder that
    matches so far, as ``glob`` does), so ``lake/*/part-0.parquet`` never walks the whole lake. With ``**``, and
    on object stores (where a listing is flat and paginated: one request per 1000 keys, whatever the depth),
    one recursive listing of ``folder``.
    """
    parts = pattern.split("/")
    if "**" in parts or not folder.local:
        regex = storage.glob_regex(pattern)
        return [f for f in _outside_outputs(folder, given) if regex.fullmatch(f.location.relative_to(folder))]
    level: list[storage.Location] = [folder]
    files: list[storage.FileInfo] = []
    for depth, part in enumerate(parts):
        regex, last = storage.glob_regex(part), depth == len(parts) - 1
        below: list[storage.Location] = []
        for where in level:
            entries = where.fs.get_file_info(pafs.FileSelector(where.path, allow_not_found=True))
            names = {e.base_name for e in entries}
            if depth > 0 and (manifest.MANIFEST in names or "_batchscore" in names):
                log.info("not reading %s: it is a batchscore output folder inside the input %s", where, given)
                continue
            for entry in sorted(entries, key=lambda e: e.path):
                if entry.base_name.startswith(storage.HIDDEN_PREFIXES) or not regex.fullmatch(entry.base_name):
                    continue
                child = storage.Location(where.fs, entry.path, where.scheme)
                if not last and entry.type == pafs.FileType.Directory:
                    below.append(child)
                elif last and entry.type == pafs.FileType.File:
                    files.append(storage.FileInfo(child, entry.size or 0, entry.mtime_ns or 0))
        level = below
    return files


def _outside_outputs(folder: storage.Location, given: str) -> list[storage.FileInfo]:
    """The files below ``folder`` (hidden names skipped), less those inside batchscore output folders nested
    below it (``folder`` itself may be one). One listing tells both: an output folder holds a manifest or a
    ``_batchscore/`` folder, which the listing shows when hidden names are kept."""
    listed = folder.list_files(skip_hidden=False)
    outputs = set()
    for f in listed:
        parts = f.location.relative_to(folder).split("/")
        for depth, part in enumerate(parts[:-1] if len(parts) > 1 else []):
            if part == "_batchscore":
                outputs.add("/".join(parts[:depth]))
        if len(parts) > 1 and parts[-1] == manifest.MANIFEST:
            outputs.add("/".join(parts[:-1]))
    outputs.discard("")
    for nested in sorted(outputs):
        log.info("not reading %s: it is a batchscore output folder inside the input %s", folder.child(nested), given)
    kept = []
    for f in listed:
        parts = f.location.relative_to(folder).split("/")
        if any(p.startswith(storage.HIDDEN_PREFIXES) for p in parts):
            continue
        if any("/".join(parts[:depth]) in outputs for depth in range(1, len(parts))):
            continue
        kept.append(f)
    return kept


def _missing_bucket(where: storage.Location) -> str:
    """On an object store, say so when it is the bucket that is missing."""
    if where.local:
        return ""
    bucket = where.path.split("/", 1)[0]
    if where.fs.get_file_info(bucket).type == pafs.FileType.NotFound:
        return f" (bucket {bucket!r} does not exist at that endpoint; check the bucket name and the endpoint)"
    return ""


def _hidden(name: str) -> bool:
    return name.startswith(("_", "."))


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
    import pyarrow.compute as pc  # 0.06 s of import, for inputs in hive folders only

    strings = pa.array(values, pa.string())
    try:
        parsed = pc.cast(strings, dtype)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return bool(pc.all(pc.equal(pc.cast(parsed, pa.string()), strings)).as_py())


def _typed(value: str, dtype: pa.DataType) -> pa.Scalar:
    import pyarrow.compute as pc

    if value == HIVE_NULL:
        return pa.scalar(None, dtype)
    return pc.cast(pa.scalar(value, pa.string()), dtype)


SCAN_THREADS = 32
"""Footers read at once from an object store: enough to hide a round trip of tens of ms behind the others."""


def scan(paths: Sequence[str | Found], *, options: Mapping[str, Any] | None = None) -> list[InputFile]:
    """Read each file's footer: schema, row count, null statistics (concurrently on an object store)."""
    jobs = [
        (p.name, p.info.location, p.info) if isinstance(p, Found) else (p, storage.resolve(p, options), None)
        for p in paths
    ]
    if len(jobs) < 2 or all(where.local for _, where, _ in jobs):
        files = [_scan_one(*job) for job in jobs]
    else:
        with ThreadPoolExecutor(max_workers=min(SCAN_THREADS, len(jobs)), thread_name_prefix="batchscore-scan") as pool:
            files = list(pool.map(lambda job: _scan_one(*job), jobs))
    types = partition_types([f.partitions for f in files])  # a hive key's type holds over every file
    return [dataclasses.replace(f, partition_types={k: types[k] for k in f.partitions}) for f in files]


def _scan_one(path: str, where: storage.Location, listed: storage.FileInfo | None) -> InputFile:
    try:
        info = listed or where.info()
        if info is None:
            raise FileNotFoundError(f"{path} does not exist")
        footer = _read_footer(where, info.size)
        pf = pq.ParquetFile(pa.BufferReader(footer))
        meta = pf.metadata
        schema = pf.schema_arrow
    except (OSError, pa.ArrowException) as exc:
        raise InputDataError(_read_error(path, exc)) from exc
    twice = sorted({name for name in schema.names if schema.names.count(name) > 1})
    if twice:
        msg = (
            f"Parquet file {path} has column name(s) {', '.join(map(repr, twice))} more than once; "
            "batchscore needs unique column names: rename the duplicates where the file is written"
        )
        raise InputDataError(msg)
    return InputFile(
        path=path,
        schema=schema,
        num_rows=meta.num_rows,
        partitions=hive_partitions(path),
        null_counts=_null_counts(meta),
        size=info.size,
        mtime_ns=info.mtime_ns,
        fingerprint=hashlib.sha256(footer).hexdigest(),
        location=where,
    )


FOOTER_READ = 64 << 10
"""Bytes read from a file's end to get its footer in one ranged read (a second one if the footer is larger)."""


def _read_footer(where: storage.Location, size: int) -> bytes:
    """The Parquet footer with its length and magic: what the schema, row counts and statistics are parsed
    from, and what :func:`batchscore.manifest.footer_sha256` hashes (the same bytes, read once)."""
    tail = where.read_tail(min(size, FOOTER_READ), size)
    if len(tail) < 8 or tail[-4:] != b"PAR1":
        return tail  # not Parquet: parsing it says so
    (length,) = struct.unpack("<I", tail[-8:-4])
    if length + 8 > len(tail):
        tail = where.read_tail(min(size, length + 8), size)
    return tail[-(length + 8) :]


def _open_parquet(
    path: str, where: storage.Location | None, *, metadata: pq.FileMetaData | None = None, stream: bool = False
) -> pq.ParquetFile:
    """Local files by path; on an object store, one opened file whose reads are coalesced and prefetched
    (``pre_buffer``), so only the footer and the column chunks asked for are fetched. ``stream``: a buffered
    stream that reads each column chunk a page at a time (for row groups too large to hold whole)."""
    source = path if where is None or where.local else where.open_input()
    if stream:
        return pq.ParquetFile(
            source,
            metadata=metadata,
            buffer_size=STREAM_BUFFER_BYTES,
            pre_buffer=False,
            page_checksum_verification=True,
        )
    return pq.ParquetFile(
        source, metadata=metadata, pre_buffer=not isinstance(source, str), page_checksum_verification=True
    )


def _read_error(path: str, exc: BaseException) -> str:
    if storage.is_uri(path):
        from batchscore._objectstore import explain

        said = explain(exc)
        if said:
            return f"cannot read Parquet file {path}: {said}"  # a store's error: what to check is in it
    return f"cannot read Parquet file {path}: {_one_line(exc)}; check that it is a complete Parquet file"


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
        if file.num_rows == 0:
            return
        pf = _open_parquet(file.path, file.location)
        meta = pf.metadata
        groups = list(range(meta.num_row_groups)) if row_groups is None else list(row_groups)
        largest = max(meta.row_group(g).num_rows for g in range(meta.num_row_groups))
        if largest <= max(WHOLE_ROW_GROUP_ROWS, batch_size):
            for group in groups:
                table = pf.read_row_group(group, columns=in_file, use_threads=True)
                for batch in table.to_batches(max_chunksize=batch_size):
                    yield batch if len(in_file) == len(wanted) else _with_partitions(batch, file, wanted)
        elif groups:
            # A buffered stream reads each column chunk a page at a time: without it (buffer_size=0)
            # pyarrow loads whole column chunks, and a 15M-row group costs its full compressed size.
            pf = _open_parquet(file.path, file.location, metadata=meta, stream=True)
            for batch in pf.iter_batches(batch_size=batch_size, row_groups=groups, columns=in_file, use_threads=True):
                yield batch if len(in_file) == len(wanted) else _with_partitions(batch, file, wanted)
    except (OSError, pa.ArrowException) as exc:
        raise InputDataError(_read_error(file.path, exc)) from exc


def row_group_sizes(file: InputFile) -> list[tuple[int, int]]:
    """Rows and compressed bytes of each row group of a file, from its footer."""
    try:
        meta = _open_parquet(file.path, file.location).metadata
    except (OSError, pa.ArrowException) as exc:
        raise InputDataError(_read_error(file.path, exc)) from exc
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
            arrays.append(pa.repeat(file.partition_value(name), batch.num_rows))
    return pa.RecordBatch.from_arrays(arrays, names=wanted)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
