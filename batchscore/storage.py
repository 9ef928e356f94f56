"""Every byte batchscore reads or writes goes through here: local disk or an object store.

A path or URI is turned into a :class:`Location` once (:func:`resolve`): a
``pyarrow.fs`` filesystem and a path in it. Reader, writer, lock and manifest
ask a location for listings, streams and small atomic writes, and never call
``os``, ``open`` or ``shutil`` themselves. Local disk is the zero-configuration
default and the first store: the local tests cover the seam.

What a store must offer, and how each kind does it:

==================  ==========================================  =========================================
operation           local disk                                  object store (s3, gs, abfs)
==================  ==========================================  =========================================
``write_bytes``     temp file, fsync, rename, fsync folder      one PUT (an object appears whole or not)
``move_to``         rename (atomic, same folder tree)           server-side copy, then delete
``create_new``      ``O_CREAT|O_EXCL``                          conditional PUT (``If-None-Match: *``)
``sync``            fsync of the file and its folder            nothing: a finished upload is durable
==================  ==========================================  =========================================

Names that start with ``_`` or ``.`` are hidden below a listed folder, as
Spark, DuckDB and pyarrow's dataset treat them.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

HIDDEN_PREFIXES = ("_", ".")
_GLOB_CHARS = frozenset("*?[")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class FileInfo:
    """A file found by a listing: its location, size and modification time."""

    location: Location
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Location:
    """A file or folder in one store: ``fs`` and a ``path`` in it (``/``-separated, no trailing ``/``)."""

    fs: pafs.FileSystem
    path: str
    scheme: str = "file"

    # -- naming -------------------------------------------------------------------------------

    @property
    def local(self) -> bool:
        """True on local disk, where ``path`` is an absolute OS path."""
        return self.scheme == "file"

    @property
    def uri(self) -> str:
        """How the location is named to users and in manifests: an absolute path, or ``scheme://path``."""
        return self.path if self.local else f"{self.scheme}://{self.path}"

    @property
    def name(self) -> str:
        """The last path component."""
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent(self) -> Location:
        """The folder holding this location."""
        head = self.path.rstrip("/").rsplit("/", 1)[0] if "/" in self.path.rstrip("/") else ""
        return Location(self.fs, head or "/", self.scheme)

    def child(self, *names: str) -> Location:
        """A location below this one; ``names`` may hold ``/``."""
        path = "/".join([self.path.rstrip("/"), *(n.strip("/") for n in names if n)])
        return Location(self.fs, path, self.scheme)

    def relative_to(self, base: Location) -> str:
        """This location's path below ``base`` (``/``-separated)."""
        prefix = base.path.rstrip("/") + "/"
        if not self.path.startswith(prefix):
            msg = f"{self.uri} is not below {base.uri}"
            raise ValueError(msg)
        return self.path[len(prefix) :]

    def is_within(self, other: Location) -> bool:
        """True if this location is ``other`` or below it, in the same store."""
        if self.scheme != other.scheme:
            return False
        mine, theirs = self.path.rstrip("/"), other.path.rstrip("/")
        return mine == theirs or mine.startswith(theirs + "/")

    def __str__(self) -> str:
        return self.uri

    # -- looking ------------------------------------------------------------------------------

    def info(self) -> FileInfo | None:
        """Size and mtime of a file; None if nothing is there or it is a folder."""
        got = self.fs.get_file_info(self.path)
        if got.type != pafs.FileType.File:
            return None
        return FileInfo(self, got.size or 0, _mtime_ns(got))

    def exists(self) -> bool:
        """A file or a folder is there."""
        return bool(self.fs.get_file_info(self.path).type != pafs.FileType.NotFound)

    def is_dir(self) -> bool:
        """A folder (or, on an object store, a prefix with objects below it) is there."""
        return bool(self.fs.get_file_info(self.path).type == pafs.FileType.Directory)

    def is_file(self) -> bool:
        """A file is there."""
        return bool(self.fs.get_file_info(self.path).type == pafs.FileType.File)

    def list_files(self, *, skip_hidden: bool = True) -> list[FileInfo]:
        """Every file below this folder, recursively, sorted by path; ``_``/``.`` names skipped below it."""
        selector = pafs.FileSelector(self.path, recursive=True, allow_not_found=True)
        found = []
        for got in self.fs.get_file_info(selector):
            if got.type != pafs.FileType.File:
                continue
            where = Location(self.fs, got.path, self.scheme)
            if skip_hidden and any(p.startswith(HIDDEN_PREFIXES) for p in where.relative_to(self).split("/")):
                continue
            found.append(FileInfo(where, got.size or 0, _mtime_ns(got)))
        return sorted(found, key=lambda f: f.location.path)

    def list_dir(self) -> list[Location]:
        """The entries directly in this folder (files and folders), hidden ones included."""
        selector = pafs.FileSelector(self.path, recursive=False, allow_not_found=True)
        found = [Location(self.fs, got.path, self.scheme) for got in self.fs.get_file_info(selector)]
        return sorted(found, key=lambda where: where.path)

    def glob(self, pattern: str, *, skip_hidden: bool = True) -> list[FileInfo]:
        """Files below this folder whose relative path matches ``pattern`` (``*``, ``?``, ``[..]``, ``**``)."""
        regex = glob_regex(pattern)
        found = self.list_files(skip_hidden=skip_hidden)
        return [f for f in found if regex.fullmatch(f.location.relative_to(self))]

    # -- reading ------------------------------------------------------------------------------

    def open_input(self) -> pa.NativeFile:
        """A random-access file for pyarrow's Parquet reader."""
        return self.fs.open_input_file(self.path)

    def read_bytes(self) -> bytes:
        """The whole file."""
        with self.fs.open_input_stream(self.path) as fh:
            return bytes(fh.read())

    def read_tail(self, length: int, size: int) -> bytes:
        """The last ``length`` bytes of a file of ``size`` bytes (one ranged read on an object store)."""
        start = max(size - length, 0)
        with self.fs.open_input_file(self.path) as fh:
            return bytes(fh.read_at(size - start, start))

    # -- writing ------------------------------------------------------------------------------

    def makedirs(self) -> None:
        """Create the folder and its parents (nothing to do on an object store)."""
        if self.local:
            os.makedirs(self.path, exist_ok=True)
        else:
            self.fs.create_dir(self.path, recursive=True)

    def open_output(self) -> pa.NativeFile:
        """A stream that creates or replaces the file (parents created); :meth:`sync` it when closed."""
        if self.local:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
        return self.fs.open_output_stream(self.path)

    def write_bytes(self, data: bytes) -> None:
        """Create or replace the file with ``data`` atomically and durably: readers see the old or the new."""
        if not self.local:
            with self.fs.open_output_stream(self.path) as fh:
                fh.write(data)
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = f"{self.path}.tmp-{os.getpid()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
        _fsync_dir(os.path.dirname(self.path))

    def create_new(self, data: bytes) -> bool:
        """Create the file with ``data`` only if nothing is there; False if something was."""
        if not self.local:
            from batchscore import _objectstore  # conditional writes need a client that can express them

            return _objectstore.create_if_absent(self, data)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(os.path.dirname(self.path))
        return True

    def sync(self) -> None:
        """Make a closed file durable (fsync it and its folder); a no-op on object stores."""
        if not self.local:
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(os.path.dirname(self.path))

    def sync_folder(self) -> None:
        """Make renames into this local folder durable (fsync the folder); a no-op on object stores."""
        if self.local:
            _fsync_dir(self.path)

    def move_to(self, dest: Location) -> None:
        """Move this file onto ``dest``, replacing it: a rename locally, copy then delete on object stores."""
        if self.local:
            os.makedirs(os.path.dirname(dest.path), exist_ok=True)
            os.replace(self.path, dest.path)
            return
        self.fs.copy_file(self.path, dest.path)
        self.fs.delete_file(self.path)

    def delete(self) -> bool:
        """Delete the file; False if it was not there."""
        try:
            self.fs.delete_file(self.path)
        except FileNotFoundError:
            return False
        return True

    def delete_tree(self) -> None:
        """Delete the folder and everything below it, if it is there."""
        with contextlib.suppress(FileNotFoundError):
            if self.is_dir():
                self.fs.delete_dir(self.path)

    def remove_empty_dirs(self) -> None:
        """Drop folders below this one left empty, hidden ones (``_``/``.``) excepted; local disk only."""
        if not self.local:
            return  # an object store has no empty folders
        for dirpath, _dirnames, _filenames in os.walk(self.path, topdown=False):
            if dirpath == self.path:
                continue
            if not any(p.startswith(HIDDEN_PREFIXES) for p in os.path.relpath(dirpath, self.path).split(os.sep)):
                with contextlib.suppress(OSError):
                    os.rmdir(dirpath)

    def try_remove_dir(self) -> None:
        """Remove the folder if it is empty (local disk; object stores have no empty folders)."""
        if self.local:
            with contextlib.suppress(OSError):
                os.rmdir(self.path)

    # -- local locks --------------------------------------------------------------------------

    def open_locked(self) -> LocalLockFile | None:
        """Open (creating) the file and take an exclusive, non-blocking OS lock on it; None if another has it.

        On an object store the lock is an object created by a conditional write and kept by a heartbeat
        (:class:`batchscore._objectlock.ObjectStoreLock`), with the same interface.
        """
        if not self.local:
            from batchscore import _objectlock

            return _objectlock.open_locked(self)
        return LocalLockFile.try_open(self.path)


class LocalLockFile:
    """A file held under ``flock`` (``msvcrt`` byte lock on Windows): the kernel lets go when its owner dies."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def try_open(cls, path: str) -> LocalLockFile | None:
        """Open and lock ``path``; None if another process holds it. Raises OSError if it cannot be opened."""
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                _try_lock(fd)
            except BlockingIOError:
                os.close(fd)
                return None
            # The previous owner may have unlinked the file between our open and lock: retry on the new one.
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return cls(path, fd)
            os.close(fd)

    def read(self) -> bytes:
        """What the file holds."""
        os.lseek(self._fd, 0, os.SEEK_SET)
        return os.read(self._fd, 65536)

    def replace_content(self, data: bytes) -> None:
        """Overwrite what the file holds."""
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        _write_all(self._fd, data)

    def check(self) -> None:
        """Nothing to check: the kernel holds an OS lock for as long as this process lives."""

    def release(self, *, unlink: bool = True) -> None:
        """Remove the file (while still holding it), then let go of the lock."""
        if unlink:
            with contextlib.suppress(OSError):
                os.remove(self.path)
        os.close(self._fd)


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> None:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except PermissionError as exc:
            raise BlockingIOError(str(exc)) from exc

    def _fsync_dir(path: str) -> None:
        """Windows cannot open a folder to fsync it; renames there are durable by the file system's journal."""

else:
    import fcntl

    def _try_lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _fsync_dir(path: str) -> None:
        fd = os.open(path or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _mtime_ns(got: pafs.FileInfo) -> int:
    mtime_ns = got.mtime_ns
    return int(mtime_ns) if mtime_ns is not None else 0


# -- resolving paths and URIs ---------------------------------------------------------------------


def is_uri(text: str) -> bool:
    """True for ``scheme://...`` (``file://`` included), False for a plain path."""
    return bool(_URI.match(text))


def resolve(location: str | os.PathLike[str], options: Mapping[str, Any] | None = None) -> Location:
    """Turn a local path or a URI into a :class:`Location` (local paths become absolute and normalized)."""
    text = os.fspath(location)
    if not is_uri(text) or text.startswith("file://"):
        if text.startswith("file://"):
            text = text[len("file://") :]
        path = os.path.abspath(os.path.expanduser(text))
        return Location(_LOCAL, path.replace(os.sep, "/") if os.sep != "/" else path, "file")
    from batchscore import _objectstore  # only runs that touch an object store load its clients

    return _objectstore.resolve(text, dict(options or {}))


_LOCAL = pafs.LocalFileSystem()


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex for a ``/``-separated glob: ``**`` spans folders, ``*`` and ``?`` stay within one."""
    out = []
    parts = pattern.split("/")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:.*/)?")
            continue
        out.append(fnmatch.translate(part).removeprefix("(?s:").removesuffix(")\\Z").replace(".*", "[^/]*"))
        if not last:
            out.append("/")
    return re.compile("".join(out))


def split_glob(text: str) -> tuple[str, str | None]:
    """``(base, pattern)``: the literal folder a glob starts from and the rest; ``(text, None)`` for no glob."""
    if not any(ch in text for ch in _GLOB_CHARS):
        return text, None
    head, sep, rest = text.partition("://") if is_uri(text) else ("", "", text)
    parts = rest.split("/")
    literal: list[str] = []
    for part in parts:
        if any(ch in part for ch in _GLOB_CHARS):
            break
        literal.append(part)
    base = "/".join(literal)
    pattern = "/".join(parts[len(literal) :])
    if sep:
        return f"{head}{sep}{base}", pattern
    return base or ".", pattern


def iter_parquet(folder: Location) -> Iterator[FileInfo]:
    """``*.parquet`` files below a folder, hidden names skipped."""
    for found in folder.list_files():
        if found.location.name.endswith(".parquet"):
            yield found


def describe_os_error(exc: BaseException) -> str:
    """One line for an OSError or Arrow error, without the library's traceback."""
    remote = sys.modules.get("batchscore._objectstore")  # loaded once a run touched an object store
    if remote is not None:
        said = remote.explain(exc)
        return str(said) if said else str(remote.scrub(_describe_os_error(exc)))
    return _describe_os_error(exc)


def _describe_os_error(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "no space left on the device"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower() if exc.strerror[:1].isupper() and exc.strerror[1:2].islower() else exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__
