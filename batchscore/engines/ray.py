"""The Ray engine: one long-lived actor per worker, each loading the model once, pulling tasks from the driver.

Rows never travel through Ray: an actor reads its task's row groups from the
input files, scores them with :func:`~batchscore.tasks.score_tasks` and writes
its part into the output's staging folder; only the task (a few numbers) goes
out and the :class:`~batchscore.tasks.TaskResult` (file names and counts)
comes back. The driver keeps two tasks queued per actor, so an actor never
waits for the driver between tasks, records each part as it comes back and
commits at the end. Ray Data's ``read_parquet``/``write_parquet`` are not used:
they keep neither row order nor one part per input, and write straight to the
final path.

The cluster: ``--ray-address`` (``auto``, ``HOST:PORT``, ``ray://HOST:10001``),
else ``RAY_ADDRESS``, else a local cluster started for the run and stopped
after it. A driver already connected (``ray.init`` called by the caller) is
used as it is. Inputs, model and output must be on storage every node reads
and writes at the same path. With ``--device cuda`` each actor holds one GPU
(``num_gpus=1``); otherwise each holds ``--threads`` CPUs (default 1) and runs
on the CPU. ``--workers`` defaults to what the cluster holds.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from batchscore import _interrupt
from batchscore.engines import Done, Scored, worker_model, worker_stats
from batchscore.errors import BatchScoreError, DeviceUnavailableError, EngineError, JobSpecError
from batchscore.spec import Device
from batchscore.tasks import Task, TaskResult, Work, score_tasks

log = logging.getLogger("batchscore")

IN_FLIGHT = 2
"""Tasks queued per actor: the next one starts as soon as the last one ends, without a round trip."""
START_TIMEOUT_S = 600.0
"""How long the actors may take to be placed and load the model (an autoscaling cluster adds nodes)."""
STOP_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0
"""How long a cluster address may take to accept a connection before the run fails (exit 7)."""
POLL_S = 0.5


def import_ray() -> Any:
    """``ray``, or a one-line error naming the extra to install."""
    try:
        import ray
    except ImportError:
        msg = "--engine ray needs Ray, which is not installed: pip install 'batchscore[ray]'"
        raise JobSpecError(msg) from None
    return ray


class RayEngine:
    """Long-lived Ray actors, one per worker, fed tasks by the driver."""

    def __init__(self, *, address: str | None, workers: int | None, threads: int | None, device: Device) -> None:
        self.address = address
        self.workers = workers
        self.threads = threads or 1
        self.gpu = device == "cuda"

    def run(self, work: Work, tasks: Sequence[Task], *, done: Done, scored: Scored) -> list[dict[str, Any]]:
        if not tasks:
            return []
        ray = import_ray()
        started = self._connect(ray)
        try:
            return self._run(ray, work, tasks, done=done, scored=scored)
        finally:
            if started:
                ray.shutdown()

    def _connect(self, ray: Any) -> bool:
        """Join the cluster (or start a local one); True when this run started the connection."""
        if ray.is_initialized():
            return False
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        if address:
            _check_reachable(address)
        main = threading.current_thread() is threading.main_thread()
        sigterm = signal.getsignal(signal.SIGTERM) if main else None
        try:
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
                configure_logging=False,
            )
        except Exception as exc:  # ConnectionError, ValueError, RuntimeError... from the client
            where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
            msg = f"cannot connect to {where}: {' '.join(str(exc).split())}; check --ray-address (or RAY_ADDRESS)"
            raise EngineError(msg) from exc
        if main:  # ray.init installs its own SIGTERM handler; keep the caller's (the CLI: exit 143, nothing committed)
            signal.signal(signal.SIGTERM, sigterm)
        log.info("engine ray: %s", f"joined the cluster at {address}" if address else "started a local cluster")
        return True

    def _run(self, ray: Any, work: Work, tasks: Sequence[Task], *, done: Done, scored: Scored) -> list[dict[str, Any]]:
        resources = ray.cluster_resources()
        if self.gpu and resources.get("GPU", 0) < 1:
            msg = "--device cuda with --engine ray needs GPUs in the Ray cluster, and it has none; use --device cpu"
            raise DeviceUnavailableError(msg)
        held = int(resources.get("GPU", 0)) if self.gpu else int(resources.get("CPU", 1) // self.threads)
        count = max(1, min(self.workers or held, len(tasks)))
        device: Device = "cuda" if self.gpu else "cpu"
        rows_counter = ray.remote(num_cpus=0)(_Rows).remote()
        scorer = ray.remote(_Scorer).options(
            num_cpus=self.threads, num_gpus=1 if self.gpu else 0, max_restarts=0, max_task_retries=0
        )
        shared = ray.put(work)
        actors = [scorer.remote(f"actor-{i}", shared, device, self.threads, rows_counter) for i in range(count)]
        pending: dict[Any, Any] = {}
        try:
            log.info("engine ray: %d actor(s), %d thread(s) each, %d task(s)", count, self.threads, len(tasks))
            self._wait_ready(ray, actors, pending)
            todo = deque(tasks)

            def submit(actor: Any) -> None:
                if todo:
                    pending[actor.score.remote(todo.popleft())] = actor

            for _ in range(IN_FLIGHT):
                for actor in actors:
                    submit(actor)
            reported = finished = 0
            while pending:
                _interrupt.check()  # the driver's stop signal (recorded by the CLI's handler): kill the actors
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
                reported += _report_rows(ray, rows_counter, scored)
                for ref in ready:
                    actor = pending.pop(ref)
                    result: TaskResult = _get(ray, ref)
                    finished += result.rows
                    done(result)
                    submit(actor)
            scored(finished - reported)  # the counts still on their way to the counter
            return [_get(ray, ref) for ref in [a.stats.remote() for a in actors]]
        finally:
            _stop(ray, [*actors, rows_counter], pending)

    def _wait_ready(self, ray: Any, actors: list[Any], pending: dict[Any, Any]) -> None:
        """Every actor placed and its model loaded, or the first error; bounded, so a cluster too small fails."""
        loads = {actor.load.remote(): actor for actor in actors}
        pending.update(loads)
        waiting = list(loads)
        deadline = time.monotonic() + START_TIMEOUT_S
        while waiting:
            _interrupt.check()
            ready, waiting = ray.wait(waiting, num_returns=1, timeout=POLL_S)
            if not ready and time.monotonic() < deadline:
                continue
            if not ready:
                msg = (
                    f"only {len(actors) - len(waiting)} of {len(actors)} Ray actor(s) started within "
                    f"{START_TIMEOUT_S:.0f} s; the cluster has {ray.cluster_resources()} and each actor needs "
                    f"{'1 GPU' if self.gpu else f'{self.threads} CPU(s)'}: lower --workers"
                )
                raise EngineError(msg)
            for ref in ready:
                pending.pop(ref)
                _get(ray, ref)


def _check_reachable(address: str) -> None:
    """Fail at once on a ``HOST:PORT`` (or ``ray://HOST:PORT``) nobody listens on; Ray's client retries for minutes."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return  # "auto", or a form Ray resolves itself
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        msg = (
            f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}; check --ray-address (or RAY_ADDRESS) "
            "and that the cluster is up (ray status)"
        )
        raise EngineError(msg) from exc


def _get(ray: Any, ref: Any) -> Any:
    """``ray.get``, with a worker's error raised as itself: same class, same message, same exit code."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, BatchScoreError):
            raise cause from None
        raise
    except ray.exceptions.RayError as err:  # the actor or its node died
        msg = (
            f"a Ray worker was lost ({type(err).__name__}: {' '.join(str(err).split())[:300]}); nothing was "
            "committed (--mode resume keeps finished parts): re-run"
        )
        raise EngineError(msg) from err


def _report_rows(ray: Any, counter: Any, scored: Scored) -> int:
    rows: int = ray.get(counter.take.remote())
    if rows:
        scored(rows)
    return rows


def _stop(ray: Any, actors: list[Any], pending: dict[Any, Any]) -> None:
    """Kill the actors and wait until their calls have ended: none may write after the driver cleans up."""
    for actor in actors:
        try:
            ray.kill(actor, no_restart=True)
        except Exception as exc:  # already dead, or the cluster is gone
            log.debug("could not kill a Ray actor: %s", exc)
    if pending:
        try:
            ray.wait(list(pending), num_returns=len(pending), timeout=STOP_TIMEOUT_S)
        except Exception as exc:
            log.debug("waiting for killed Ray actors failed: %s", exc)


class _Rows:
    """A counter the actors add scored rows to and the driver drains, for the progress bar."""

    def __init__(self) -> None:
        self.rows = 0

    def add(self, rows: int) -> None:
        self.rows += rows

    def take(self) -> int:
        rows, self.rows = self.rows, 0
        return rows


class _Scorer:
    """A Ray actor: loads the model once (:meth:`load`), then scores one task per call (:meth:`score`)."""

    def __init__(self, name: str, work: Work, device: Device, threads: int, rows: Any) -> None:
        self.name = name
        self.work = work
        self.device: Device = device
        self.threads = threads
        self.rows_counter = rows
        self.model: Any = None
        self.tasks = 0
        self.rows = 0

    def load(self) -> str:
        self.model = worker_model(self.work, device=self.device, threads=self.threads)
        return str(self.model.provider)

    def score(self, task: Task) -> TaskResult:
        results: list[TaskResult] = []
        score_tasks(self.work, self.model, [task], done=results.append, scored=self.rows_counter.add.remote)
        self.tasks += 1
        self.rows += results[0].rows
        return results[0]

    def stats(self) -> dict[str, Any]:
        return worker_stats(self.name, tasks=self.tasks, rows=self.rows)
