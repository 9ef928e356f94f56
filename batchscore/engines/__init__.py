"""Engines run a run's tasks; only distribution lives here.

The driver (:mod:`batchscore.pipeline`) does everything before the first row
(inputs, model and pin, mapping, lock, resume) and the commit after the last;
in between it hands an engine a :class:`~batchscore.tasks.Work` and the list of
:class:`~batchscore.tasks.Task`. Every engine scores each task with the same
:func:`~batchscore.tasks.score_tasks` into the output's staging folder, and
hands each :class:`~batchscore.tasks.TaskResult` back to the driver, which
records the part and, at the end, commits. Workers never commit.

==============  ==========================================================================
``local``       the threaded pipeline in the driver's process (the default)
``processes``   ``--workers N`` spawned processes on this machine, each loading the model once
``ray``         one long-lived Ray actor per worker, each loading the model once
==============  ==========================================================================

An engine reports rows as they are scored (``scored``), finished tasks as
they finish (``done``, in any order), and raises the first error a worker
raised, as the same class with the same message, after stopping every worker.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from batchscore.errors import DeviceUnavailableError, ModelError
from batchscore.spec import Device, JobSpec

if TYPE_CHECKING:
    from batchscore.model import Model
    from batchscore.tasks import Task, TaskResult, Work

Done = Callable[["TaskResult"], None]
Scored = Callable[[int], None]

_model_loads = 0
"""Models this process loaded as a worker: a worker loads its model once, whatever the number of tasks."""


class Engine(Protocol):
    """Runs tasks and reports back; see the module docstring."""

    def run(self, work: Work, tasks: Sequence[Task], *, done: Done, scored: Scored) -> list[dict[str, Any]]:
        """Score every task; return what each worker did (``worker``, ``host``, ``pid``, ``tasks``, ``model_loads``)."""
        ...


def engine_for(spec: JobSpec, model: Model) -> Engine:
    """The engine ``spec.engine`` names; the local one scores with the driver's ``model``."""
    if spec.engine == "processes":
        from batchscore.engines.processes import ProcessEngine

        return ProcessEngine(workers=spec.workers, threads=spec.threads)
    if spec.engine == "ray":
        from batchscore.engines.ray import RayEngine

        return RayEngine(address=spec.ray_address, workers=spec.workers, threads=spec.threads, device=spec.device)
    from batchscore.engines.local import LocalEngine

    return LocalEngine(model)


def available_cores() -> int:
    """Cores this process may run on (taskset and cpusets respected where the OS tells)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def worker_model(work: Work, *, device: Device, threads: int) -> Model:
    """Load the run's model in a worker, once, and check it is the model and device the driver checked."""
    global _model_loads
    import pyarrow as pa

    from batchscore.model import Model

    pa.set_cpu_count(threads)  # a worker decodes Parquet with its share of the cores, like onnxruntime
    model = Model(work.spec.model, device=device, threads=threads, storage_options=work.spec.storage_options)
    _model_loads += 1
    host = platform.node()
    if model.sha256 != work.model_sha256:
        msg = (
            f"model {work.spec.model} on worker host {host} has sha256 {model.sha256}, but the driver checked "
            f"{work.model_sha256}; every worker must read the same model file (shared storage)"
        )
        raise ModelError(msg)
    if model.provider != work.provider:
        msg = (
            f"a worker on {host} runs the model on {model.provider}, but the driver expected {work.provider}; "
            "give every worker the same device, or pass --device cpu"
        )
        raise DeviceUnavailableError(msg)
    return model


def worker_stats(name: str, *, tasks: int, rows: int) -> dict[str, Any]:
    """One line of the run report's ``workers``: who scored how much, and how often it loaded the model."""
    return {
        "worker": name,
        "host": platform.node(),
        "pid": os.getpid(),
        "tasks": tasks,
        "rows": rows,
        "model_loads": _model_loads,
    }
