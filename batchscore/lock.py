"""One run per output folder: ``DIR/_batchscore.lock``.

On local disk the lock is an OS lock (``flock``) on the lock file, so the
kernel releases it when its owner dies, even by ``kill -9``: a lock file left
behind by a dead run is simply taken over. The file records the owner's pid,
host and run id, for the message the second run prints and for whoever looks
at the folder.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from datetime import UTC, datetime
from typing import Any

from batchscore.errors import OutputError, OutputLockedError
from batchscore.storage import LocalLockFile, Location, describe_os_error, resolve

log = logging.getLogger("batchscore")

LOCK = "_batchscore.lock"


class OutputLock:
    """An exclusive, non-blocking lock on an output folder, held by this process."""

    def __init__(self, folder: Location | str, *, run_id: str) -> None:
        self.folder = folder if isinstance(folder, Location) else resolve(folder)
        self.where = self.folder.child(LOCK)
        self.run_id = run_id
        self._held: LocalLockFile | None = None

    def acquire(self) -> None:
        """Take the lock or fail at once (exit 5) naming its owner."""
        try:
            held = self.where.open_locked()
        except PermissionError as exc:
            msg = (
                f"output folder {self.folder.uri} is not writable ({describe_os_error(exc)}): fix its permissions, "
                "or choose another output path"
            )
            raise OutputError(msg) from exc
        except OSError as exc:
            msg = (
                f"cannot take the lock {self.where.uri}: {describe_os_error(exc)}; it must be a writable file "
                "(remove whatever is at that path), or choose another output path"
            )
            raise OutputError(msg) from exc
        if held is None:
            owner = read_owner(self.where)
            msg = (
                f"output {self.folder.uri} is being written by another run "
                f"(pid {owner.get('pid', '?')} on {owner.get('host', '?')}, run {owner.get('run_id', '?')}, "
                f"since {owner.get('since', '?')}); wait for it to finish, or choose another output path"
            )
            raise OutputLockedError(msg)
        stale = _parse(held.read().decode(errors="replace"))
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
        held.replace_content((json.dumps(owner) + "\n").encode())
        self._held = held

    def check(self) -> None:
        """Raise :class:`OutputLockedError` if this run lost the lock (an object-store lock whose heartbeat
        stalled past its expiry and was taken over); called before every step that publishes."""
        if self._held is not None:
            self._held.check()

    def release(self) -> None:
        """Remove the lock file, then let go of the lock."""
        if self._held is not None:
            self._held.release()
            self._held = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_owner(where: Location) -> dict[str, Any]:
    """What a lock file says about its owner; empty if unreadable."""
    try:
        return _parse(where.read_bytes().decode(errors="replace"))
    except OSError:
        return {}


def _parse(text: str) -> dict[str, Any]:
    try:
        owner = json.loads(text)
    except ValueError:
        return {}
    return owner if isinstance(owner, dict) else {}
