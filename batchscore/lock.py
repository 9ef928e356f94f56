"""One run per output folder: ``DIR/_batchscore.lock``.

The lock is an ``flock`` on the lock file, so the kernel releases it when its
owner dies, even by ``kill -9``: a lock file left behind by a dead run is
simply taken over. The file records the owner's pid, host and run id, for the
message the second run prints and for whoever looks at the folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import sys
from datetime import UTC, datetime
from typing import Any

from batchscore.errors import OutputLockedError

log = logging.getLogger("batchscore")

LOCK = "_batchscore.lock"

if sys.platform == "win32":
    import msvcrt

    def _try_lock(fd: int) -> None:
        """Lock the file's first byte or raise BlockingIOError; Windows drops it when the process dies."""
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except PermissionError as exc:
            raise BlockingIOError(str(exc)) from exc

else:
    import fcntl

    def _try_lock(fd: int) -> None:
        """flock the file or raise BlockingIOError; the kernel drops it when the process dies."""
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


class OutputLock:
    """An exclusive, non-blocking lock on an output folder, held by this process."""

    def __init__(self, folder: str, *, run_id: str) -> None:
        self.path = os.path.join(folder, LOCK)
        self.run_id = run_id
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or fail at once (exit 5) naming its owner."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                _try_lock(fd)
            except BlockingIOError:
                os.close(fd)
                owner = read_owner(self.path)
                msg = (
                    f"output {os.path.dirname(self.path)} is being written by another run "
                    f"(pid {owner.get('pid', '?')} on {owner.get('host', '?')}, run {owner.get('run_id', '?')}, "
                    f"since {owner.get('since', '?')}); wait for it to finish, or choose another output path"
                )
                raise OutputLockedError(msg) from None
            # The previous owner may have unlinked the file between our open and flock: retry on the new one.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        stale = _read_fd(fd)
        if stale:
            log.warning(
                "took over the lock of a run that is gone (pid %s on %s, run %s)",
                stale.get("pid"),
                stale.get("host"),
                stale.get("run_id"),
            )
        owner = {
            "pid": os.getpid(),
            "host": platform.node(),
            "run_id": self.run_id,
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(owner) + "\n").encode())
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file, then let go of the lock."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.remove(self.path)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_owner(path: str) -> dict[str, Any]:
    """What a lock file says about its owner; empty if unreadable."""
    try:
        with open(path, encoding="utf-8") as fh:
            return _parse(fh.read())
    except OSError:
        return {}


def _read_fd(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    return _parse(os.read(fd, 4096).decode(errors="replace"))


def _parse(text: str) -> dict[str, Any]:
    try:
        owner = json.loads(text)
    except ValueError:
        return {}
    return owner if isinstance(owner, dict) else {}
