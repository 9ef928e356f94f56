"""The output lock on an object store: ``OUT/_batchscore.lock``, an object created by a conditional write and
kept alive by a heartbeat (see :class:`ObjectStoreLock`). Built on :mod:`batchscore._objectstore`'s
conditional writes; :meth:`batchscore.storage.Location.open_locked` hands it out behind the interface of a
local lock file (:class:`ObjectLockFile`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from batchscore._objectstore import Version, delete_if, put_if, read_versioned
from batchscore.errors import JobSpecError
from batchscore.storage import LocalLockFile

if TYPE_CHECKING:
    from batchscore.storage import Location

log = logging.getLogger("batchscore")


LOCK_EXPIRY_S = 120.0
"""A lock whose heartbeat is older than this is taken over (unless its owner asked for longer)."""


class ObjectStoreLock:
    """``OUT/_batchscore.lock`` on an object store: created by a conditional write, kept alive by a heartbeat.

    It mirrors :class:`batchscore.lock.OutputLock`: :meth:`acquire` takes it or raises
    :class:`~batchscore.errors.OutputLockedError` (exit 5) naming the owner; :meth:`release` lets it go. The
    object holds ``{pid, host, run_id, since, heartbeat, expiry_s}`` as JSON.

    - Taking it: create the object only if none is there (S3 ``If-None-Match: *``, GCS ``ifGenerationMatch=0``).
    - Heartbeat: a thread rewrites it every ``expiry_s / 4`` seconds, only if it is still the version this run
      wrote (``If-Match``). If that fails, or no heartbeat got through for ``expiry_s``, the lock is ``lost``
      and :meth:`check` raises, so a run that stalled never publishes over its successor.
    - Taking over: a lock is stale at once when its owner is provably dead (same host, no such pid), otherwise
      once its last sign of life (the heartbeat written, or the object's last-modified time by the store's
      clock, whichever is later) is older than the expiry (ours or the owner's, the longer). It is replaced
      only if it is still the version that was judged stale, so of two runs taking over one wins.
    """

    def __init__(
        self, location: Location, *, run_id: str, expiry_s: float = LOCK_EXPIRY_S, heartbeat_s: float | None = None
    ) -> None:
        if expiry_s <= 0:
            msg = f"lock expiry must be a positive number of seconds, got {expiry_s}"
            raise JobSpecError(msg)
        self.location = location
        self.run_id = run_id
        self.expiry_s = float(expiry_s)
        self.heartbeat_s = float(heartbeat_s) if heartbeat_s is not None else self.expiry_s / 4
        self.taken_over: dict[str, Any] | None = None
        """The owner whose stale lock this run took over, if it did."""
        self._since = ""
        self._version: Version | None = None
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()

    # -- taking and letting go --------------------------------------------------------------

    def acquire(self) -> None:
        """Take the lock or fail at once (exit 5) naming its owner; a stale lock is taken over (and logged)."""
        import time
        from datetime import UTC, datetime

        from batchscore.errors import OutputLockedError

        self._since = datetime.now(UTC).isoformat(timespec="seconds")
        for _attempt in range(8):
            created = put_if(self.location, self._payload(), None)
            if created is not None:
                self._hold(created)
                return
            current = read_versioned(self.location)
            if current is None:
                continue  # released between our write and our read: try again
            data, version, modified = current
            owner = _parse(data)
            reason = self._stale(owner, modified)
            if reason is None:
                raise OutputLockedError(self._held_message(owner, modified))
            replaced = put_if(self.location, self._payload(), version)
            if replaced is not None:
                log.info(  # batchscore.lock says so as a warning; this line adds why
                    "took over the lock of a run that is gone (pid %s on %s, run %s): %s",
                    owner.get("pid", "?"),
                    owner.get("host", "?"),
                    owner.get("run_id", "?"),
                    reason,
                )
                self.taken_over = owner
                self._hold(replaced)
                return
            time.sleep(0.05)  # another run changed it in between: look again
        msg = (
            f"output {self.location.parent.uri} is contended: its lock changed hands 8 times while this run "
            "tried to take it; wait for the other runs to finish"
        )
        raise OutputLockedError(msg)

    def release(self) -> None:
        """Stop the heartbeat and delete the lock object if it is still this run's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._guard:
            version, self._version = self._version, None
        if version is None:
            return
        try:
            if not delete_if(self.location, version):
                log.warning("did not remove %s: another run holds it now", self.location.uri)
        except OSError as exc:
            log.warning(
                "could not remove the lock %s (%s); the next run takes it over once it expires", self.location.uri, exc
            )

    def __enter__(self) -> ObjectStoreLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- while held ---------------------------------------------------------------------------

    @property
    def lost(self) -> bool:
        """True once this run can no longer prove it holds the lock (its heartbeat failed or was overtaken)."""
        return self._lost is not None

    def check(self) -> None:
        """Raise OutputLockedError (exit 5) if the lock was lost; call it before each publishing step."""
        if self._lost is not None:
            from batchscore.errors import OutputLockedError

            raise OutputLockedError(self._lost)

    def owner(self) -> dict[str, Any]:
        """What the lock object says about its owner now (whoever that is); empty if there is none."""
        try:
            current = read_versioned(self.location)
        except OSError:
            return {}
        return _parse(current[0]) if current else {}

    def _hold(self, version: Version) -> None:
        import time

        with self._guard:
            self._version = version
        self._last_beat = time.monotonic()
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="batchscore-lock", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if not self.refresh():
                return

    def refresh(self) -> bool:
        """Rewrite the lock with a fresh heartbeat if it is still this run's; False once it is lost."""
        import time

        with self._guard:
            version = self._version
            if version is None:
                return False
            try:
                written = put_if(self.location, self._payload(), version)
            except OSError as exc:
                if time.monotonic() - self._last_beat > self.expiry_s:
                    self._lose(f"no heartbeat reached the store for {self.expiry_s:.0f} s ({exc})")
                    return False
                log.warning("lock heartbeat on %s failed, retrying: %s", self.location.uri, exc)
                return True
            if written is None:
                self._lose("another run replaced it after this run's heartbeat lapsed")
                return False
            self._version, self._last_beat = written, time.monotonic()
            return True

    def _lose(self, why: str) -> None:
        self._version = None
        self._lost = (
            f"lost the lock on output {self.location.parent.uri}: {why}; this run stops without publishing, "
            "re-run it (mode resume keeps what is committed)"
        )
        log.error("%s", self._lost)

    # -- helpers ------------------------------------------------------------------------------

    def _payload(self) -> bytes:
        import json
        import platform
        from datetime import UTC, datetime

        owner = {
            "pid": os.getpid(),
            "host": platform.node(),
            "run_id": self.run_id,
            "since": self._since,
            "heartbeat": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "expiry_s": self.expiry_s,
        }
        return (json.dumps(owner) + "\n").encode()

    def _stale(self, owner: dict[str, Any], modified: float) -> str | None:
        """Why the lock ``owner`` holds may be taken over, or None while it may still be alive."""
        import platform

        pid = owner.get("pid")
        same_host = owner.get("host") == platform.node()
        if same_host and isinstance(pid, int) and pid != os.getpid() and _pid_alive(pid) is False:
            return f"no process {pid} on this host"
        age = self._age(owner, modified)
        limit = max(self.expiry_s, _number(owner.get("expiry_s")) or 0.0)
        if age > limit:
            return f"its last heartbeat is {age:.0f} s old (expiry {limit:.0f} s)"
        return None

    @staticmethod
    def _age(owner: dict[str, Any], modified: float) -> float:
        import time
        from datetime import datetime

        alive = modified
        with contextlib.suppress(ValueError):
            alive = max(alive, datetime.fromisoformat(str(owner.get("heartbeat"))).timestamp())
        return max(time.time() - alive, 0.0)

    def _held_message(self, owner: dict[str, Any], modified: float) -> str:
        limit = max(self.expiry_s, _number(owner.get("expiry_s")) or 0.0)
        return (
            f"output {self.location.parent.uri} is being written by another run "
            f"(pid {owner.get('pid', '?')} on {owner.get('host', '?')}, run {owner.get('run_id', '?')}, "
            f"since {owner.get('since', '?')}, last heartbeat {self._age(owner, modified):.0f} s ago); "
            f"wait for it to finish, or choose another output path (a lock without heartbeat for "
            f"{limit:.0f} s is taken over)"
        )


def _parse(data: bytes) -> dict[str, Any]:
    import json

    try:
        owner = json.loads(data.decode(errors="replace"))
    except ValueError:
        return {}
    return owner if isinstance(owner, dict) else {}


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _pid_alive(pid: int) -> bool | None:
    """Whether a process of this host has that pid; None where that cannot be asked safely (Windows)."""
    import sys

    if sys.platform == "win32":  # os.kill(pid, 0) would terminate it there
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except (OSError, OverflowError):
        return None
    return True


def open_locked(location: Location) -> ObjectLockFile | None:
    """:meth:`batchscore.storage.Location.open_locked` on an object store: the lock taken, or None if another
    live run holds it."""
    from batchscore._objectstore import FAMILIES
    from batchscore.errors import OutputLockedError

    if location.scheme not in FAMILIES:
        msg = (
            f"{location.uri}: {location.scheme}:// offers no conditional write (create only if absent, replace "
            "only if unchanged), so two runs could not be kept apart; write the output to s3://, gs://, abfs:// "
            "or a local path"
        )
        raise OSError(msg)
    lock = ObjectStoreLock(location, run_id="")
    try:
        lock.acquire()
    except OutputLockedError:
        return None
    return ObjectLockFile(lock)


class ObjectLockFile(LocalLockFile):
    """An :class:`ObjectStoreLock` behind the interface of a local lock file (``read``, ``replace_content``,
    ``release``), so :mod:`batchscore.lock` holds either; ``check()`` says whether it is still held."""

    def __init__(self, lock: ObjectStoreLock) -> None:
        self.path = lock.location.uri
        self.lock = lock

    def read(self) -> bytes:
        """What the lock held before this run took it: a stale owner's record, or nothing."""
        import json

        return json.dumps(self.lock.taken_over).encode() if self.lock.taken_over else b""

    def replace_content(self, data: bytes) -> None:
        """Record the owner (pid, host, run id, since) in the lock object, heartbeat and expiry added."""
        owner = _parse(data)
        self.lock.run_id = str(owner.get("run_id", self.lock.run_id))
        self.lock._since = str(owner.get("since", self.lock._since))
        self.lock.refresh()
        self.lock.check()

    def check(self) -> None:
        """Raise OutputLockedError if the lock was lost (a stalled run whose lock another run took over)."""
        self.lock.check()

    def release(self, *, unlink: bool = True) -> None:
        """Stop the heartbeat and delete the lock object if it is still this run's."""
        self.lock.release()
