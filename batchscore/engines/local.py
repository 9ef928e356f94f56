"""The local engine: the threaded pipeline in the driver's own process, with the model the driver loaded."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from batchscore.engines import Done, Scored
from batchscore.tasks import Task, TaskResult, Work, score_tasks

if TYPE_CHECKING:
    from batchscore.model import Model


class LocalEngine:
    """Scores every task in this process: a reader, the scoring thread and a writer, overlapped."""

    def __init__(self, model: Model) -> None:
        self.model = model

    def run(self, work: Work, tasks: Sequence[Task], *, done: Done, scored: Scored) -> list[dict[str, Any]]:
        rows = [0]

        def finished(result: TaskResult) -> None:
            rows[0] += result.rows
            done(result)

        score_tasks(work, self.model, tasks, done=finished, scored=scored)
        return [{"worker": "local", "host": platform.node(), "pid": os.getpid(), "tasks": len(tasks), "rows": rows[0]}]
