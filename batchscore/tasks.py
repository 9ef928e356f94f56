"""The work between the checks and the commit, cut into tasks, and the threaded pipeline that scores them.

The driver (:mod:`batchscore.pipeline`) checks everything, plans the tasks
(:func:`plan_tasks`) and commits; an engine (:mod:`batchscore.engines`) runs
the tasks, in the driver's process or in workers. Every engine scores a task
with :func:`score_tasks`, so every engine writes the same bytes.

A task is one input file, or, for a file larger than :data:`TASK_BYTES`, one
range of its row groups (a *piece*), so that one 20 GB file does not keep a
whole cluster waiting on one worker. The plan depends only on the input files,
never on the engine: a file split in pieces gives ``part-00000-000.parquet``,
``part-00000-001.parquet``, ... under every engine, and one part per input file
(``part-00000.parquet``, as always) otherwise.

:func:`score_tasks` is three threads joined by bounded queues: one reads
Parquet batches (pyarrow releases the GIL while it decodes), the caller's
thread assembles features and runs the model (onnxruntime releases the GIL),
and one writes parts. On the GPU a fourth assembles the next batch while the
model runs. A slow stage makes the others wait instead of piling batches up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import pyarrow as pa

from batchscore import _interrupt
from batchscore._threads import Prefetch, Sink
from batchscore.mapping import FeaturePlan
from batchscore.reader import InputFile, iter_batches, row_group_sizes
from batchscore.rowfilter import RowFilter
from batchscore.scorer import Assembled, BatchScorer
from batchscore.spec import JobSpec
from batchscore.summary import Summary
from batchscore.writer import dictionary_columns

if TYPE_CHECKING:
    from batchscore.model import Model

TASK_BYTES = 1 << 30
"""An input file larger than this (compressed) is scored in pieces of about this size, whole row groups each."""
QUEUE_DEPTH = 1
WRITE_QUEUE_BYTES = 32 << 20
"""How much scored output may wait for the writer. At the end of each part (and of each row group of
about 1M rows) the writer compresses everything pending, then syncs: a burst of 50-150 ms on 2 cores.
With one batch of room the scoring thread stopped at its next batch, and the reader one batch later,
leaving a core idle; scored batches are small (about 1.5 MB per 65,536 rows for an id and a
classifier's outputs), so up to 16 of them, within this many bytes, may wait instead."""
ASSEMBLE_IN_THREAD = frozenset({"CUDAExecutionProvider"})
"""Providers whose runs leave the CPU free, so the next batch is assembled in a thread of its own while
the model runs. On the CPU, onnxruntime's threads already use every core: measured on 2 cores, the
extra thread cost 7% on a linear model and 40 MB of peak memory, so assembly stays inline there."""


class PartSink(Protocol):
    """Where a task's part goes: the run's staging area (:class:`batchscore.writer.Staging`, which pickles)."""

    def write_part(
        self,
        index: int,
        schema: pa.Schema,
        batches: Iterable[pa.RecordBatch],
        *,
        dictionary: Sequence[str] = (),
        piece: int | None = None,
    ) -> list[str]: ...


@dataclass(frozen=True)
class Task:
    """One unit of work: an input file, or a range of its row groups."""

    index: int
    """The input file, by its position in the sorted input list."""
    piece: int | None = None
    """None for a whole file; else this task's number among the pieces of its file."""
    pieces: int = 1
    """How many tasks the file was cut into."""
    row_groups: tuple[int, ...] | None = None
    """The row groups to read; None: all of them."""
    rows: int = 0
    """Rows the task reads (before any filter)."""


@dataclass(frozen=True)
class TaskResult:
    """What a finished task hands back to the driver: its staged files and its counts."""

    task: Task
    files: list[str]
    """Staged file names, relative to the staging folder."""
    rows: int
    """Rows written."""
    rows_filtered: int = 0
    rows_null_output: int = 0
    null_counts: dict[str, int] = field(default_factory=dict)
    """Nulls met per feature column."""
    summary: bytes | None = None
    """The part's data summary (:meth:`batchscore.summary.Summary.to_bytes`), when the run keeps one."""


@dataclass(frozen=True)
class Work:
    """Everything a worker needs to score any task of a run. It pickles: workers get it once."""

    spec: JobSpec
    files: list[InputFile]
    plan: FeaturePlan
    staging: PartSink
    model_sha256: str
    """The model the driver checked; a worker that loads another file refuses to score."""
    provider: str
    """The execution provider the driver expects every worker to run on."""
    summary: bytes | None = None
    """An empty summary of the run's columns (``Summary.to_bytes``): each task fills its own; None: no summary."""

    @property
    def schema(self) -> pa.Schema:
        """The parts' schema: keep columns, then the prediction columns."""
        return self.plan.output_schema(self.files[0])

    @property
    def dictionary(self) -> list[str]:
        """Columns to dictionary-encode in the parts."""
        also = [o.name for o in self.plan.outputs if o.role in ("label", "threshold")]
        return dictionary_columns(self.schema, also=also)


def plan_tasks(files: Sequence[InputFile], todo: Iterable[int], *, task_bytes: int | None = None) -> list[Task]:
    """The tasks for the files to score, in input order: whole files, and pieces of files over ``task_bytes``."""
    limit = TASK_BYTES if task_bytes is None else task_bytes
    tasks: list[Task] = []
    for index in todo:
        file = files[index]
        if file.size <= limit:
            tasks.append(Task(index, rows=file.num_rows))
            continue
        ranges: list[tuple[list[int], int]] = []
        groups: list[int] = []
        rows = size = 0
        for group, (group_rows, group_bytes) in enumerate(row_group_sizes(file)):
            if groups and size + group_bytes > limit:
                ranges.append((groups, rows))
                groups, rows, size = [], 0, 0
            groups.append(group)
            rows += group_rows
            size += group_bytes
        if groups or not ranges:
            ranges.append((groups, rows))
        if len(ranges) == 1:
            tasks.append(Task(index, rows=file.num_rows))
            continue
        tasks += [
            Task(index, piece=i, pieces=len(ranges), row_groups=tuple(g), rows=n) for i, (g, n) in enumerate(ranges)
        ]
    return tasks


@dataclass(frozen=True)
class _TaskEnd:
    """Sent down the pipeline after a task's last batch."""

    rows_filtered: int
    null_counts: dict[str, int] = field(default_factory=dict)
    rows_null_output: int = 0
    summary: bytes | None = None


class _PartBatches:
    """The batches of one task as they come through the writer's queue, up to its end marker."""

    def __init__(self, first: pa.RecordBatch | _TaskEnd, items: Iterator[tuple[Task, pa.RecordBatch | _TaskEnd]]):
        self._first = first
        self._items = items
        self.rows = 0
        self.end: _TaskEnd | None = None
        """Set once the end marker arrived; None if the queue was abandoned mid-part."""

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        item = self._first
        while not isinstance(item, _TaskEnd):
            self.rows += item.num_rows
            yield item
            following = next(self._items, None)
            if following is None:
                return
            item = following[1]
        self.end = item


_Assembled = tuple[Task, pa.RecordBatch | None, "Assembled | _TaskEnd"]
"""What the assembly stage hands on: a batch and its model inputs, or a task's end with its null counts."""


def score_tasks(
    work: Work,
    model: Model,
    tasks: Iterable[Task],
    *,
    done: Callable[[TaskResult], None],
    scored: Callable[[int], None] | None = None,
) -> None:
    """Score ``tasks`` in order, each into its staged part; ``done`` gets each task's result once its part is written.

    ``tasks`` may be a generator that pulls work as it goes (a worker's queue): the next task is read
    while the last one is being written. ``scored`` is told the rows of every batch scored, for progress.
    ``done`` runs in the writer thread.
    """
    spec, files, plan = work.spec, work.files, work.plan
    row_filter = RowFilter(spec.filter) if spec.filter else None
    schema = work.schema
    overlap = model.provider in ASSEMBLE_IN_THREAD
    # Assembled in a thread of its own, up to QUEUE_DEPTH + 2 batches live at once: one being assembled,
    # the queued ones, one being scored. Assembled inline, one.
    scorer = BatchScorer(
        model,
        plan,
        on_null=spec.on_null,
        fill_value=spec.fill_value,
        buffers=QUEUE_DEPTH + 2 if overlap else 1,
    )
    keep_count = len(plan.keep)
    columns = plan.read_columns
    filter_only = [c for c in row_filter.columns if c not in columns] if row_filter else []

    def read() -> Iterator[tuple[Task, pa.RecordBatch | _TaskEnd]]:
        for task in tasks:
            file = files[task.index]
            filtered = 0
            for batch in iter_batches(
                file, columns + filter_only, batch_size=spec.batch_size, row_groups=task.row_groups
            ):
                if row_filter is None:
                    yield task, batch
                    continue
                kept = row_filter.apply(batch, source=file.path)
                filtered += batch.num_rows - kept.num_rows
                if kept.num_rows:
                    yield task, kept.select(columns) if filter_only else kept
            yield task, _TaskEnd(filtered)

    dictionary = work.dictionary

    def write(items: Iterator[tuple[Task, pa.RecordBatch | _TaskEnd]]) -> None:
        for task, first in items:
            batches = _PartBatches(first, items)
            names = work.staging.write_part(task.index, schema, batches, dictionary=dictionary, piece=task.piece)
            end = batches.end
            if end is None:
                return  # abandoned: the run failed
            done(
                TaskResult(
                    task,
                    files=names,
                    rows=batches.rows,
                    rows_filtered=end.rows_filtered,
                    rows_null_output=end.rows_null_output,
                    null_counts=end.null_counts,
                    summary=end.summary,
                )
            )

    def assemble(items: Iterable[tuple[Task, pa.RecordBatch | _TaskEnd]]) -> Iterator[_Assembled]:
        for task, batch in items:
            if isinstance(batch, _TaskEnd):  # the task is done: its null counts are complete here
                yield task, None, _TaskEnd(batch.rows_filtered, dict(scorer.null_counts))
            else:
                yield task, batch, scorer.assemble(batch, source=files[task.index].path)

    reader = Prefetch(read(), depth=QUEUE_DEPTH, name="batchscore-read")
    stage = assemble(reader)
    assembled = Prefetch(stage, depth=QUEUE_DEPTH, name="batchscore-assemble") if overlap else None
    depth = _write_queue_depth(schema, spec.batch_size)
    sink: Sink[tuple[Task, pa.RecordBatch | _TaskEnd]] = Sink(write, depth=depth, name="batchscore-write")
    nulls_before: dict[str, int] = {}
    null_output = 0
    template = Summary.from_bytes(work.summary) if work.summary is not None else None
    summary = template.empty() if template is not None else None
    try:
        for task, batch, ready in assembled or stage:
            _interrupt.check()  # the driver's stop signal, at a batch boundary (a no-op in workers)
            if batch is None:
                assert isinstance(ready, _TaskEnd)
                nulls = {k: v - nulls_before.get(k, 0) for k, v in ready.null_counts.items()}
                nulls_before = ready.null_counts
                blob = summary.to_bytes() if summary is not None else None
                end = _TaskEnd(ready.rows_filtered, {k: v for k, v in nulls.items() if v}, null_output, blob)
                sink.put((task, end))
                null_output = 0
                summary = template.empty() if template is not None else None
                continue
            assert isinstance(ready, Assembled)
            predicted = scorer.infer(ready)
            if summary is not None:
                summary.update(batch, predicted)  # issue 11: features as read, outputs as scored
            sink.put((task, pa.RecordBatch.from_arrays(batch.columns[:keep_count] + predicted, schema=schema)))
            if ready.invalid is not None:
                null_output += int(ready.invalid.sum())
            if scored is not None:
                scored(ready.rows)
        sink.close()
    except BaseException:
        sink.abandon()
        raise
    finally:
        if assembled is not None:
            assembled.close()
        reader.close()


def _write_queue_depth(schema: pa.Schema, batch_size: int) -> int:
    """Scored batches that fit in WRITE_QUEUE_BYTES (1 to 16), from the output's row width."""
    width = 0.0
    for f in schema:
        try:
            width += f.type.bit_width / 8
        except ValueError:  # strings, lists: counted as 64 bytes a row
            width += 64
    return max(QUEUE_DEPTH, min(16, int(WRITE_QUEUE_BYTES // max(width * batch_size, 1))))
