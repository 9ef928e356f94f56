"""The processes engine: ``--workers N`` processes on this machine, each loading the model once.

A light model on a many-core host is bound by one Python process (reading,
assembling and writing run in one interpreter); N processes each run the
threaded pipeline of :func:`~batchscore.tasks.score_tasks` on whole tasks,
with onnxruntime and pyarrow given ``cores // N`` threads each (``--threads``
overrides). Workers are spawned (no fork of a process holding threads and an
onnxruntime session), pull tasks from one queue, and send back rows scored,
finished tasks and errors; the driver records the parts and commits.

A worker ignores Ctrl-C (the driver stops it), exits when the driver dies
(even by ``kill -9``), and is terminated when another worker fails.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import pickle
import queue
import signal
import sys
import threading
import time
import traceback
import types
from collections.abc import Iterator, Sequence
from typing import Any

from batchscore import _interrupt
from batchscore.engines import Done, Scored, available_cores, worker_model, worker_stats
from batchscore.errors import EngineError
from batchscore.tasks import Task, TaskResult, Work, score_tasks

log = logging.getLogger("batchscore")

POLL_S = 0.2
STOP_GRACE_S = 5.0


class ProcessEngine:
    """N spawned worker processes pulling tasks from a queue."""

    def __init__(self, *, workers: int | None, threads: int | None) -> None:
        self.workers = workers
        self.threads = threads

    def run(self, work: Work, tasks: Sequence[Task], *, done: Done, scored: Scored) -> list[dict[str, Any]]:
        if not tasks:
            return []
        cores = available_cores()
        count = min(self.workers or cores, len(tasks))
        threads = self.threads or max(1, cores // count)
        log.info("engine processes: %d worker(s), %d thread(s) each, %d task(s)", count, threads, len(tasks))
        ctx = mp.get_context("spawn")
        todo: mp.Queue[Task | None] = ctx.Queue()
        results: mp.Queue[tuple[Any, ...]] = ctx.Queue()
        procs = [
            ctx.Process(
                target=_worker,
                args=(f"process-{i}", work, threads, todo, results, os.getpid()),
                name=f"batchscore-worker-{i}",
                daemon=True,
            )
            for i in range(count)
        ]
        with _main_hidden():
            for proc in procs:
                proc.start()
        for task in tasks:
            todo.put(task)
        for _ in procs:
            todo.put(None)
        stats: list[dict[str, Any]] = []
        try:
            remaining = len(tasks)
            checked = time.monotonic()
            while remaining or len(stats) < count:
                _interrupt.check()  # the driver's stop signal (recorded by the CLI's handler): stop the workers
                if time.monotonic() - checked > POLL_S:  # a dead worker sends nothing: look, even while others talk
                    _check_alive(procs, finished={s["worker"] for s in stats})
                    checked = time.monotonic()
                try:
                    message = results.get(timeout=POLL_S)
                except queue.Empty:
                    continue
                kind = message[0]
                if kind == "rows":
                    scored(message[1])
                elif kind == "done":
                    remaining -= 1
                    done(message[1])
                elif kind == "stats":
                    stats.append(message[1])
                else:  # "error"
                    raise message[1]
            for proc in procs:
                proc.join(STOP_GRACE_S)
        finally:
            _stop(procs)
            for channel in (todo, results):
                channel.cancel_join_thread()  # tasks left in a pipe nobody reads must not block our exit
                channel.close()
        return sorted(stats, key=lambda s: str(s["worker"]))


@contextlib.contextmanager
def _main_hidden() -> Iterator[None]:
    """Spawn without the caller's ``__main__``: a worker needs nothing from it, and spawn would run the caller's
    script again in every worker (all of it, without an ``if __name__ == "__main__"`` guard; or fail on stdin)."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _check_alive(procs: Sequence[mp.process.BaseProcess], *, finished: set[str]) -> None:
    for number, proc in enumerate(procs):
        if proc.exitcode not in (None, 0) and f"process-{number}" not in finished:
            how = f"signal {-proc.exitcode}" if proc.exitcode < 0 else f"exit code {proc.exitcode}"
            msg = (
                f"worker process {proc.pid} died ({how}) before finishing its tasks, out of memory or killed; "
                "nothing was committed (--mode resume keeps finished parts): re-run, with fewer --workers if "
                "memory is short"
            )
            raise EngineError(msg)


def _stop(procs: Sequence[mp.process.BaseProcess]) -> None:
    """Terminate the workers still running and wait for them: none may write after the driver cleans up."""
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join()


def _worker(
    name: str, work: Work, threads: int, todo: mp.Queue[Task | None], results: mp.Queue[tuple[Any, ...]], parent: int
) -> None:
    """A worker process: load the model once, then score tasks from the queue until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the driver decides
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True, name="batchscore-parent").start()
    tasks = rows = 0
    try:
        model = worker_model(work, device=work.spec.device, threads=threads)

        def pull() -> Iterator[Task]:
            while (task := todo.get()) is not None:
                yield task

        def finished(result: TaskResult) -> None:
            nonlocal tasks, rows
            tasks += 1
            rows += result.rows
            results.put(("done", result))

        score_tasks(work, model, pull(), done=finished, scored=lambda n: results.put(("rows", n)))
        results.put(("stats", worker_stats(name, tasks=tasks, rows=rows)))
    except BaseException as exc:
        results.put(("error", _transportable(exc)))


def _transportable(exc: BaseException) -> BaseException:
    """The exception itself when it pickles (every BatchScoreError does), else its traceback as text."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        text = "".join(traceback.format_exception(exc))
        return RuntimeError(f"a batchscore worker process failed:\n{text}")
    return exc


def _exit_with_parent(parent: int) -> None:
    """End this worker when the driver is gone (killed, even by kill -9): nobody would commit its work."""
    while True:
        if os.getppid() != parent:
            with contextlib.suppress(Exception):
                log.warning("the batchscore driver (pid %d) is gone; worker %d exits", parent, os.getpid())
            os._exit(1)
        time.sleep(1.0)
