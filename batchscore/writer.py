"""Parquet out: a journaled commit that touches only its own files, on any store.

The output folder ``OUT``::

    part-00000.parquet ...      committed parts (the only *.parquet files batchscore writes there)
    _batchscore.json            the manifest: which parts are batchscore's, and where they came from
    _SUCCESS                    written last, once every part and the manifest are in place
    _batchscore.lock            held while a run owns the folder (see batchscore.lock)
    _batchscore/<run id>/       a run's work area: staged parts (*.parquet.staged), part records
    _batchscore/commit.json     the journal of a commit under way

A commit moves through four states, each step idempotent:

1. **staged**: parts are written into the run's work area under names that end
   in ``.staged`` (no reader globbing ``*.parquet`` lists them) and synced; with
   ``mode="resume"`` each finished part also gets a record there, so a run that
   dies leaves parts the next one adopts instead of rescoring.
2. **journaled**: the new manifest is staged, then ``commit.json`` says what the
   commit will do: parts to publish (staged name -> final name), old parts to
   retire, the manifest to install. Until it exists, the folder holds exactly
   the previous output.
3. **published**: ``_SUCCESS`` is removed, the parts are moved into place
   (rename on local disk; copy then delete on object stores), retired parts
   are deleted, the manifest is installed.
4. **committed**: ``_SUCCESS`` is written, the journal and work area removed.

A run that dies after (2) leaves a journal: the next run, of any mode, first
rolls it forward under the lock. Everything that needs free space happens before
(2), so a full disk leaves the previous output as it was. batchscore deletes or
replaces only files a manifest in the folder lists; a folder with Parquet files
no manifest claims is refused.

With ``partition_by``, each part is split by pyarrow's dataset writer into hive
folders ``OUT/col=value/part-NNNNN-I.parquet``; the commit is the same.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from batchscore import manifest
from batchscore.errors import OutputError, OutputExistsError
from batchscore.lock import LOCK, OutputLock, read_owner
from batchscore.spec import Compression, Mode
from batchscore.storage import Location, describe_os_error, iter_parquet, resolve

log = logging.getLogger("batchscore")

SUCCESS = "_SUCCESS"
WORK = "_batchscore"
JOURNAL = "commit.json"
RUN_RECORD = "run.json"
STAGED = ".staged"
LEGACY_STAGING = "_staging-"
METADATA_KEY = b"batchscore"
ROW_GROUP_ROWS = 1 << 20
ROW_GROUP_BYTES = 64 << 20
MAX_PARTITIONS = 1024


def part_name(index: int, piece: int | None = None) -> str:
    """``part-00000.parquet``: one part per input file, in sorted input order.

    A file scored in several tasks gives one part per piece, ``part-00000-000.parquet``, ...: sorted
    names stay in input order.
    """
    return f"{part_stem(index, piece)}.parquet"


def part_stem(index: int, piece: int | None = None) -> str:
    """``part-00000``, or ``part-00000-001`` for the second piece of an input file cut into tasks."""
    return f"part-{index:05d}" if piece is None else f"part-{index:05d}-{piece:03d}"


def _record_name(index: int) -> str:
    return f"part-{index:05d}.json"


@dataclass(frozen=True)
class Staging:
    """Where and how one run writes its parts: picklable, so workers in other processes write their own."""

    root: Location
    """The run's work area, ``OUT/_batchscore/<run id>``."""
    metadata: dict[bytes, bytes] = field(default_factory=dict)
    compression: Compression = "zstd"
    partition_by: tuple[str, ...] = ()

    def write_part(
        self,
        index: int,
        schema: pa.Schema,
        batches: Iterable[pa.RecordBatch],
        *,
        dictionary: Sequence[str] = (),
        piece: int | None = None,
    ) -> list[str]:
        """Write and sync one part in the work area; its final file names, relative to the output folder.

        ``dictionary`` names the columns to dictionary-encode (see :func:`dictionary_columns`); ``piece``
        numbers the parts of an input file scored in several tasks (see :func:`part_name`).
        """
        schema = schema.with_metadata(self.metadata)
        if self.partition_by:
            names = self._write_partitioned(index, part_stem(index, piece), schema, batches, dictionary)
        else:
            names = [part_name(index, piece)]
            part = PartWriter(self.root.child(names[0] + STAGED), schema, dictionary, compression=self.compression)
            for batch in batches:
                part.write(batch)
            part.close()
        try:
            for name in names:
                self.root.child(name + STAGED).sync()
        except OSError as exc:
            raise OutputError(_write_error(self.root.child(names[0]).uri, exc)) from exc
        return names

    def _write_partitioned(
        self, index: int, stem: str, schema: pa.Schema, batches: Iterable[pa.RecordBatch], dictionary: Sequence[str]
    ) -> list[str]:
        import pyarrow.dataset as ds  # 0.1 s of import time that unpartitioned runs skip

        written: list[str] = []
        try:
            ds.write_dataset(
                batches,
                self.root.path,
                filesystem=self.root.fs,
                schema=schema,
                format="parquet",
                partitioning=list(self.partition_by),
                partitioning_flavor="hive",
                basename_template=f"{stem}-{{i}}.parquet{STAGED}",
                existing_data_behavior="overwrite_or_ignore",
                preserve_order=True,
                max_rows_per_group=ROW_GROUP_ROWS,
                max_partitions=MAX_PARTITIONS,
                file_options=ds.ParquetFileFormat().make_write_options(
                    compression=self.compression,
                    use_dictionary=[c for c in dictionary if c not in self.partition_by],
                    write_page_checksum=True,
                ),
                file_visitor=lambda f: written.append(f.path),
            )
        except (OSError, pa.ArrowException) as exc:
            if "partitions" in str(exc) and str(MAX_PARTITIONS) in str(exc):
                found = re.search(r"into (\d+) partitions", str(exc))
                msg = (
                    f"input file {index} would be split into {found.group(1) if found else 'more than'} hive "
                    f"folders by partition_by {', '.join(self.partition_by)}, more than the {MAX_PARTITIONS} allowed; "
                    "partition by columns with fewer distinct values"
                )
            else:
                msg = f"cannot write output part {index} into {self.root.uri}: {describe_os_error(exc)}; "
                msg += "check free space and permissions"
            raise OutputError(msg) from exc
        prefix = self.root.path.rstrip("/") + "/"
        return sorted(p[len(prefix) :].removesuffix(STAGED) for p in written)

    def staged(self, name: str) -> Location:
        """Where a part's file (by its final name) is staged."""
        return self.root.child(name + STAGED)


class OutputDir:
    """The output folder of one run: lock, recovery, staging, parts, journaled commit."""

    def __init__(
        self,
        path: Location | str,
        *,
        mode: Mode,
        run_id: str,
        metadata: dict[str, Any],
        compression: Compression = "zstd",
        partition_by: Sequence[str] | None = None,
        header: dict[str, Any] | None = None,
    ) -> None:
        self.root = path if isinstance(path, Location) else resolve(path)
        self.path = self.root.uri
        self.mode = mode
        self.run_id = run_id
        self.work = self.root.child(WORK)
        self.staging = Staging(
            self.work.child(run_id),
            metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()},
            compression=compression,
            partition_by=tuple(partition_by or ()),
        )
        self.header = dict(header or {})
        """Identity and lineage written at the top of the manifest (model_sha256, spec_hash, ...)."""
        self.parts: dict[int, dict[str, Any]] = {}
        """Manifest entries of the parts of this output, by index: kept from before, adopted, or written now."""
        self.complete = False
        """True when resume finds the output already complete: nothing to score, nothing to commit."""
        self._staged: set[int] = set()
        """Indices whose files sit in this run's work area, to be published by the commit."""
        self._old: dict[str, Any] | None = None
        self._lock = OutputLock(self.root, run_id=run_id)
        self._created = False
        self._opened = False

    # -- looking, read-only -------------------------------------------------------------------

    def existing_output(self) -> list[str]:
        """Committed output already in the folder (relative names): parts, manifest, success marker."""
        found = [f.location.relative_to(self.root) for f in iter_parquet(self.root)]
        found += [name for name in (manifest.MANIFEST, SUCCESS) if self.root.child(name).exists()]
        return sorted(found)

    def pending_commit(self) -> dict[str, Any] | None:
        """The journal of a commit a dead run left half done, if any."""
        try:
            return dict(json.loads(self.work.child(JOURNAL).read_bytes()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            msg = f"cannot read the commit journal {self.work.child(JOURNAL).uri}: {describe_os_error(exc)}"
            msg += "; move the folder's contents away, or choose another --out"
            raise OutputError(msg) from exc

    def check(self, files: Sequence[Any]) -> list[int]:
        """What this run would do, read-only: raise if the mode forbids it; the indices of the files to score."""
        if self.root.is_file():
            msg = f"output path {self.path} is a file, not a directory; pass --out with a directory"
            raise OutputError(msg)
        if self.pending_commit() is not None:
            return list(range(len(files)))  # the commit of a dead run is finished first; then see again
        self._old = manifest.read(self.root)
        existing = self.existing_output()
        listed = manifest.listed_files(self._old)
        foreign = [name for name in existing if name.endswith(".parquet") and name not in listed]
        if foreign:
            msg = (
                f"output directory {self.path} holds {len(foreign)} Parquet file(s) that no batchscore manifest there "
                f"lists (e.g. {', '.join(foreign[:3])}); batchscore only replaces its own parts: move them away, "
                "or choose an empty or new --out"
            )
            raise OutputExistsError(msg)
        if existing and self.mode == "error":
            msg = (
                f"output directory {self.path} already holds output ({len(existing)} file(s), e.g. {existing[0]}); "
                "pass --mode overwrite to replace it, --mode resume to finish it, or choose another --out"
            )
            raise OutputExistsError(msg)
        self.parts = {}
        if self.mode == "resume":
            self._check_resume(files)
        return [i for i in range(len(files)) if i not in self.parts]

    def _check_resume(self, files: Sequence[Any]) -> None:
        old = self._old
        if old is None:
            return
        self._check_same_scoring(old, what="its parts were")
        for entry in old["parts"]:
            index = entry["index"]
            if 0 <= index < len(files) and manifest.same_input(entry, files[index]):
                if manifest.parts_intact(entry, self.root):
                    self.parts[index] = entry
                else:
                    log.warning("part %d of %s is damaged or missing: rescoring it", index, self.path)
        kept = {name for entry in self.parts.values() for name in entry["files"]}
        done = self.root.child(SUCCESS).exists() and bool(old.get("complete"))
        self.complete = len(self.parts) == len(files) and kept == manifest.listed_files(old) and done

    def _check_same_scoring(self, old: dict[str, Any], *, what: str) -> None:
        for key, change in (
            ("model_sha256", "a different model (sha256"),
            ("spec_hash", "different options (spec hash"),
        ):
            if old.get(key) != self.header.get(key):
                msg = (
                    f"cannot resume {self.path}: {what} scored with {change} {old.get(key)}, "
                    f"this run has {self.header.get(key)}); pass --mode overwrite to rescore everything"
                )
                raise OutputExistsError(msg)

    # -- opening ------------------------------------------------------------------------------

    def open(self, files: Sequence[Any]) -> list[int]:
        """Lock the folder, finish or clear what dead runs left, check it against the mode; the files to score."""
        if self.root.is_file():
            self.check(files)  # raises the clear message
        try:
            self._created = not self.root.exists()
            self.root.makedirs()
        except OSError as exc:
            msg = (
                f"cannot create output directory {self.path}: {describe_os_error(exc)}; check the path and permissions"
            )
            raise OutputError(msg) from exc
        self._lock.acquire()
        self._opened = True
        try:
            journal = self.pending_commit()
            if journal is not None:
                log.warning("finishing the commit of run %s, which did not complete", journal.get("run_id"))
                self._roll_forward(journal)
            todo = self.check(files)
            self._clear_dead_runs(files)
            todo = [i for i in todo if i not in self.parts]
            if self.parts:
                log.info("resuming %s: %d of %d part(s) already done", self.path, len(self.parts), len(files))
            if not self.complete:
                self.staging.root.makedirs()
                self.staging.root.child(RUN_RECORD).write_bytes(json.dumps(self._identity()).encode())
        except OSError as exc:
            self.close()
            msg = f"cannot prepare output directory {self.path}: {describe_os_error(exc)}; check free space and "
            msg += "permissions"
            raise OutputError(msg) from exc
        except BaseException:
            self.close()
            raise
        return todo

    def _identity(self) -> dict[str, Any]:
        return {k: self.header.get(k) for k in ("run_id", "model_sha256", "spec_hash")} | {"run_id": self.run_id}

    def _clear_dead_runs(self, files: Sequence[Any]) -> None:
        """Remove what runs that died left in the work area; with resume, adopt their finished parts first."""
        for entry in self.root.list_dir():
            if entry.name.startswith(LEGACY_STAGING):  # staging folders of batchscore before version 2
                log.warning("removing %s, left by a run that did not finish", entry.uri)
                entry.delete_tree()
        for dead in self.work.list_dir():
            if dead.name in (self.run_id, JOURNAL):
                continue
            if self.mode == "resume":
                self._adopt(dead, files)
            log.warning("removing %s, left by a run that did not finish", dead.uri)
            dead.delete_tree()
            dead.delete()

    def _adopt(self, dead: Location, files: Sequence[Any]) -> None:
        try:
            identity = json.loads(dead.child(RUN_RECORD).read_bytes())
        except (OSError, ValueError):
            return
        if any(identity.get(k) != self.header.get(k) for k in ("model_sha256", "spec_hash")):
            return
        dead_stage = Staging(dead)
        for found in dead.list_files(skip_hidden=False):
            name = found.location.name
            if not (name.startswith("part-") and name.endswith(".json")):
                continue
            try:
                entry = json.loads(found.location.read_bytes())
                index = entry["index"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if index in self.parts or not (0 <= index < len(files)) or not manifest.same_input(entry, files[index]):
                continue
            staged = {n: dead_stage.staged(n) for n in entry["files"]}
            probe = {**entry, "files": [s.relative_to(dead) for s in staged.values()]}
            if not manifest.parts_intact(probe, dead):
                continue
            self.staging.root.makedirs()
            for n, src in staged.items():
                src.move_to(self.staging.staged(n))
            self._record(index, entry)
            log.info("adopting part %d, scored by run %s before it stopped", index, identity.get("run_id"))

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
        """Write one part into this run's work area; its final file names (see :meth:`Staging.write_part`)."""
        return self.staging.write_part(index, schema, batches, dictionary=dictionary, piece=piece)

    def finish_part(self, index: int, entry: dict[str, Any]) -> None:
        """A part is written and synced: record it (with ``mode="resume"``, durably, for a run after a crash)."""
        try:
            sizes = []
            for name in entry["files"]:
                info = self.staging.staged(name).info()
                if info is None:
                    msg = f"internal error: staged part {self.staging.staged(name).uri} is missing"
                    raise OutputError(msg)
                sizes.append(info.size)
            self._record(index, {**entry, "sizes": sizes})
        except OSError as exc:
            raise OutputError(_write_error(self.staging.root.uri, exc)) from exc
        log.debug("part %d written (%s)", index, ", ".join(entry["files"]))

    def _record(self, index: int, entry: dict[str, Any]) -> None:
        if self.mode == "resume":
            self._lock.check()
            self.staging.root.child(_record_name(index)).write_bytes(json.dumps(entry).encode())
        self.parts[index] = entry
        self._staged.add(index)

    # -- committing ---------------------------------------------------------------------------

    def commit(
        self, parts: int, lineage: dict[str, Any], *, sidecars: Mapping[str, bytes | None] | None = None
    ) -> list[str]:
        """Journal, then publish every staged part, retire old ones, install the manifest, write ``_SUCCESS``.

        ``sidecars``: small files installed in the folder with the parts (or, for None, removed), such as the
        run summary; names start with ``_`` so that readers of the folder skip them.
        """
        if sorted(self.parts) != list(range(parts)):
            msg = f"internal error: {len(self.parts)} of {parts} parts written in {self.staging.root.uri}"
            raise OutputError(msg)
        names = [f for i in range(parts) for f in self.parts[i]["files"]]
        self.header.update(lineage)
        new_manifest = {**self.header, "complete": True, "parts": [self.parts[i] for i in range(parts)]}
        staged_manifest = self.staging.root.child(manifest.MANIFEST)
        staged_success = self.staging.root.child(SUCCESS)
        extra = {name: data for name, data in (sidecars or {}).items() if data is not None}
        journal = {
            "run_id": self.run_id,
            "publish": [
                [self.staging.staged(n).relative_to(self.root), n]
                for i in sorted(self._staged)
                for n in self.parts[i]["files"]
            ]
            + [[self.staging.staged(n).relative_to(self.root), n] for n in sorted(extra)],
            "retire": sorted(manifest.listed_files(self._old) - set(names))
            + sorted(n for n, data in (sidecars or {}).items() if data is None),
            "manifest": staged_manifest.relative_to(self.root),
            "success": staged_success.relative_to(self.root),
        }
        self._lock.check()  # a run that lost its lock must not publish
        try:  # everything that needs space happens before the journal exists; after it, only moves and deletes
            for name, data in extra.items():
                self.staging.staged(name).write_bytes(data)
            staged_manifest.write_bytes(manifest.encode(new_manifest))
            staged_success.write_bytes(b"")
            self.work.child(JOURNAL).write_bytes(json.dumps(journal, indent=1).encode())
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.work.child(JOURNAL).delete()
            msg = f"cannot commit output into {self.path}: {describe_os_error(exc)}; the previous output is "
            msg += "unchanged; check free space and permissions"
            raise OutputError(msg) from exc
        self._roll_forward(journal)
        log.info("committed %d part(s) to %s", parts, self.path)
        return [self.root.child(n).uri for n in names]

    def _roll_forward(self, journal: dict[str, Any]) -> None:
        """Carry out a journaled commit; every step can be repeated, so a crash anywhere is finished next time."""
        try:
            self.root.child(SUCCESS).delete()
            folders: dict[str, Location] = {}
            for src_name, dest_name in journal["publish"]:
                src, dest = self.root.child(src_name), self.root.child(dest_name)
                if src.exists():
                    src.move_to(dest)
                elif not dest.is_file():
                    msg = f"cannot finish the commit of run {journal.get('run_id')}: {src.uri} and {dest.uri} are gone"
                    raise OutputError(msg + "; move the folder's contents away, or choose another --out")
                folders[dest.parent.path] = dest.parent
            for name in journal["retire"]:
                self.root.child(name).delete()
            self.root.remove_empty_dirs()
            staged_manifest = self.root.child(journal["manifest"])
            if staged_manifest.exists():
                staged_manifest.move_to(self.root.child(manifest.MANIFEST))
            for folder in folders.values():
                folder.sync_folder()
            staged_success = self.root.child(journal.get("success", ""))
            if journal.get("success") and staged_success.exists():
                staged_success.move_to(self.root.child(SUCCESS))
            elif not self.root.child(SUCCESS).exists():
                self.root.child(SUCCESS).write_bytes(b"")
            self.root.sync_folder()
            self.work.child(JOURNAL).delete()
            self.work.child(str(journal.get("run_id"))).delete_tree()
        except OSError as exc:
            msg = f"the commit into {self.path} stopped half way: {describe_os_error(exc)}; the next run of this "
            msg += "job finishes it (fix the cause first)"
            raise OutputError(msg) from exc

    def close(self) -> None:
        """Remove this run's work area and let go of the lock; committed output is left as it is."""
        if not self._opened:
            return
        self._opened = False
        try:
            with contextlib.suppress(OSError):
                self._drop_work_area()
        finally:
            self._lock.release()
        if self._created:
            self.root.try_remove_dir()

    def _drop_work_area(self) -> None:
        """This run's staged parts go, unless resume may adopt them; the work folder goes once empty."""
        if self.work.child(JOURNAL).exists():
            return  # a commit stopped half way: the next run finishes it from what is staged
        if self.mode == "resume" and not self.complete and self._staged and self.work.child(self.run_id).exists():
            return  # finished parts of a failed resume run: the next run adopts them
        self.staging.root.delete_tree()
        if not self.work.list_dir():
            self.work.delete_tree()


def lock_owner(folder: Location) -> dict[str, Any]:
    """Who holds (or left) the lock of an output folder; empty if nobody."""
    where = folder.child(LOCK)
    return read_owner(where) if where.exists() else {}


class PartWriter:
    """One output Parquet file: batches gathered into row groups of about ``ROW_GROUP_ROWS``.

    Large row groups keep downstream scans (DuckDB, Spark) fast; the bytes
    limit keeps memory bounded when the passthrough columns are wide. Pages
    carry CRC checksums, which readers that verify them check.

    The writer's options were measured against its work (an id, a dictionary-encoded
    label and two float32 probabilities, zstd; CPU ns per row, medians of two runs of 5 and 9
    interleaved rounds, 2-core dev box under load): as now 91/77, no statistics on the
    probabilities 91/73, no statistics at all 87/72, no dictionary for the label 87/84, with
    a page index 87/78, without page checksums 83/74, byte-stream-split probabilities 95/83.
    zstd on the incompressible probabilities is the cost; what an option could save (under
    1% of a light model's run) does not pay for changed files: statistics (which let DuckDB
    and Spark skip row groups by id), the label's dictionary and the checksums stay.
    """

    def __init__(
        self, where: Location, schema: pa.Schema, dictionary: Sequence[str], *, compression: Compression = "zstd"
    ) -> None:
        self.where = where
        self.schema = schema
        self._pending: list[pa.RecordBatch] = []
        self._rows = 0
        self._bytes = 0
        try:
            self._sink = where.open_output()
            self._writer = pq.ParquetWriter(
                self._sink, schema, compression=compression, use_dictionary=list(dictionary), write_page_checksum=True
            )
        except (OSError, pa.ArrowException) as exc:
            raise OutputError(_write_error(where.uri, exc)) from exc

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
        except (OSError, pa.ArrowException) as exc:
            raise OutputError(_write_error(self.where.uri, exc)) from exc
        self._pending, self._rows, self._bytes = [], 0, 0

    def close(self) -> None:
        """Write what is pending and the footer."""
        self._flush()
        try:
            self._writer.close()
            self._sink.close()
        except (OSError, pa.ArrowException) as exc:
            raise OutputError(_write_error(self.where.uri, exc)) from exc


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


def _write_error(path: str, exc: BaseException) -> str:
    return f"cannot write {path}: {describe_os_error(exc)}; check free space and permissions"


def read_metadata(path: str) -> dict[str, Any]:
    """The ``batchscore`` footer metadata of an output part."""
    with resolve(path).open_input() as fh:
        meta = pq.read_schema(fh).metadata or {}
    return dict(json.loads(meta[METADATA_KEY]))
