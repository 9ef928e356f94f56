"""reader -> features -> model -> writer, overlapped, with bounded memory.

Three threads: one reads Parquet batches (pyarrow releases the GIL while it
decodes), the caller's thread assembles features and runs the model
(onnxruntime releases the GIL), and one writes parts. On the GPU a fourth
assembles the next batch while the model runs. Bounded queues connect them, so
a slow stage makes the others wait instead of piling batches up.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import onnxruntime as ort
import pyarrow as pa

from batchscore import _interrupt, manifest, storage
from batchscore._threads import Prefetch, Sink
from batchscore._version import __version__
from batchscore.errors import BatchScoreError, JobSpecError, ModelError, OutputError, SchemaMismatchError
from batchscore.mapping import FeaturePlan, plan_features
from batchscore.model import Model
from batchscore.quality import NO_SIDECARS, RunQuality
from batchscore.reader import InputFile, find_inputs, iter_batches, scan
from batchscore.report import Progress, ProgressCallback, RunReport, check_report_path, peak_rss_mb, write_report
from batchscore.rowfilter import RowFilter
from batchscore.scorer import Assembled, BatchScorer
from batchscore.spec import JobSpec
from batchscore.summary import SUMMARY
from batchscore.summary import find as summary_file
from batchscore.writer import OutputDir, dictionary_columns, lock_owner

if TYPE_CHECKING:
    from batchscore.delta import DeltaOutput

log = logging.getLogger("batchscore")

QUEUE_DEPTH = 1
ASSEMBLE_IN_THREAD = frozenset({"CUDAExecutionProvider"})
"""Providers whose runs leave the CPU free, so the next batch is assembled in a thread of its own while
the model runs. On the CPU, onnxruntime's threads already use every core: measured on 2 cores, the
extra thread cost 7% on a linear model and 40 MB of peak memory, so assembly stays inline there."""


@dataclass
class Prepared:
    """A run checked and ready: files scanned, model loaded (and its pin checked), columns mapped."""

    spec: JobSpec
    files: list[InputFile]
    model: Model
    plan: FeaturePlan
    row_filter: RowFilter | None = None

    def settings(self) -> dict[str, Any]:
        """What shapes the output's data and layout; a resumed run must agree on all of it."""
        spec = self.spec
        return {
            "features": list(self.plan.features),
            "inputs": {b.name: list(b.columns) for b in self.plan.inputs},
            "keep": list(self.plan.keep),
            "outputs": [o.name for o in self.plan.outputs],
            "threshold": spec.threshold,
            "on_null": spec.on_null,
            "fill_value": spec.fill_value,
            "filter": spec.filter,
            "compression": spec.compression,
            "partition_by": list(spec.partition_by or ()),
        }

    def describe_mapping(self) -> dict[str, Any]:
        """Which columns feed which input and what comes out, as ``inspect --data`` shows it."""
        return {
            "files": len(self.files),
            "rows": sum(f.num_rows for f in self.files),
            "inputs": {b.name: b.describe(self.files[0]) for b in self.plan.inputs},
            "features": list(self.plan.features),
            "keep": list(self.plan.keep),
            "outputs": [o.name for o in self.plan.outputs],
            "rows_per_call": self.plan.batch_dim or "any",
        }


def prepare(spec: JobSpec) -> Prepared:
    """Everything that can fail before the first row: inputs, model, pin, device, mapping, filter, partitions."""
    options = spec.storage_options
    found = find_inputs(spec.inputs, options=options)
    _check_out_apart(spec.out, [f.name for f in found], options)
    files = scan(found, options=options)
    if spec.report:
        check_report_path(spec.report)
    model = Model(spec.model, device=spec.device, threads=spec.threads, storage_options=options)
    if spec.model_sha256 is not None and model.sha256 != spec.model_sha256.lower():
        msg = (
            f"model {spec.model} has sha256 {model.sha256}, but the job pins {spec.model_sha256.lower()}; "
            "score with the approved model, or update the pin after review"
        )
        raise ModelError(msg)
    plan = plan_features(files, model, spec)
    _check_feature_order(spec, model, plan)
    row_filter = RowFilter(spec.filter) if spec.filter else None
    if row_filter is not None:
        for file in files:
            row_filter.check(file.full_schema, source=file.path)
    if spec.partition_by:
        columns = list(plan.keep) + [o.name for o in plan.outputs]
        unknown = [c for c in spec.partition_by if c not in columns]
        if unknown or len(spec.partition_by) >= len(columns):
            msg = (
                f"partition_by names {', '.join(map(repr, unknown or spec.partition_by))}, but the output columns are "
                f"{', '.join(columns)}; partition by kept columns (and keep at least one other column)"
            )
            raise JobSpecError(msg)
    log.info(
        "%d file(s), %d rows; model %s (%s, %d features) on %s",
        len(files),
        sum(f.num_rows for f in files),
        os.path.basename(spec.model),
        model.kind,
        len(plan.features),
        model.provider,
    )
    return Prepared(spec=spec, files=files, model=model, plan=plan, row_filter=row_filter)


def _check_feature_order(spec: JobSpec, model: Model, plan: FeaturePlan) -> None:
    """Features taken from the file's column order must be in the order earlier runs of this output used."""
    inferred = [b for b in plan.inputs if b.origin == "auto"]
    if not inferred:
        return
    now = list(plan.features)
    log.warning(
        "model input %r takes every numeric column in file order: %s; pin this order with --features "
        "(input.features in a job file) so that an upstream column swap cannot reorder it",
        inferred[0].name,
        ", ".join(now),
    )
    options = spec.storage_options
    earlier = [spec.out]
    if spec.history:
        base, pattern = storage.split_glob(spec.history)
        if pattern is not None and storage.resolve(base, options).is_dir():
            found = {
                f.location.parent.uri
                for f in storage.resolve(base, options).glob(f"{pattern}/{manifest.MANIFEST}", skip_hidden=False)
            }
            earlier += sorted(found - {storage.resolve(spec.out, options).uri}, reverse=True)
    for folder in earlier:
        try:
            before = manifest.read(storage.resolve(folder, options))
        except BatchScoreError:
            continue
        if before is None or before.get("model_sha256") != model.sha256 or not before.get("features"):
            continue
        if list(before["features"]) != now:
            msg = (
                f"the numeric columns feeding model input {inferred[0].name!r} changed since {folder} was scored "
                f"with this model: then [{', '.join(before['features'])}], now [{', '.join(now)}]; the model would "
                "read swapped or new columns: pin the training order with input.features (--features)"
            )
            raise SchemaMismatchError(msg)
        return  # the most recent earlier output agrees


def _check_out_apart(out: str, inputs: list[str], options: Mapping[str, Any]) -> None:
    """``--out`` must not be an input, nor a folder above one: a commit there could replace the inputs."""
    where = storage.resolve(out, options)
    for path in inputs:
        given = storage.resolve(path, options)
        if given.is_within(where):
            msg = (
                f"--out {out} is {'the input' if given == where else 'a folder holding the input'} "
                f"{path}; scores must go to a folder apart from the inputs: choose another --out"
            )
            raise JobSpecError(msg)


def run(spec: JobSpec, *, progress: ProgressCallback | None = None) -> RunReport:
    """Score every input file into ``spec.out``: all or nothing, or part by part with ``mode="resume"``."""
    started = time.perf_counter()
    ready = prepare(spec)
    files, model, plan = ready.files, ready.model, ready.plan
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]
    report = RunReport(
        run_id=run_id,
        output=spec.out,
        model=spec.model,
        model_sha256=model.sha256,
        provider=model.provider,
        onnxruntime_version=ort.__version__,
        batchscore_version=__version__,
        features=list(plan.features),
        keep=list(plan.keep),
        files=[{"path": f.path, "rows": f.num_rows} for f in files],
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    metadata = {
        "run_id": run_id,
        "created_at": report.started_at,
        "model": spec.model,
        "model_sha256": model.sha256,
        "onnxruntime_version": ort.__version__,
        "provider": model.provider,
        "features": list(plan.features),
        "batchscore_version": __version__,
    }
    header = _header(ready, run_id=run_id, started_at=report.started_at)
    out = _output(
        ready,
        mode=spec.mode,
        run_id=run_id,
        metadata=metadata,
        compression=spec.compression,
        partition_by=spec.partition_by,
        header=header,
    )
    # the run summary (and drift check) goes next to a folder of parts; a Delta table has no place for it yet
    quality = RunQuality(spec, plan, files) if spec.summary and isinstance(out, OutputDir) else None
    with _interrupt.deferred():  # a signal stops the run at the next batch, never inside a queue or the commit
        todo = out.open(files)
        try:
            report.parts_skipped = len(files) - len(todo)
            if out.complete:
                log.info("%s already holds all %d part(s) for these inputs; nothing to score", spec.out, len(files))
                if isinstance(out, OutputDir):  # a Delta table keeps no parts from before: its commit is one
                    report.parts = [out.root.child(f).uri for i in sorted(out.parts) for f in out.parts[i]["files"]]
            else:
                _stream(ready, todo, out, report, progress, quality)
                _interrupt.check()  # the last moment to stop with nothing committed
                entries = [out.parts[i] for i in sorted(out.parts)]
                lineage = {
                    "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "seconds": round(time.perf_counter() - started, 3),
                    "runs": sorted({e["run_id"] for e in entries}),
                    "rows_written": sum(e["rows"] for e in entries),
                    "null_counts": _sum_counts(e["null_counts"] for e in entries),
                }
                # the run summary is committed with the output, before the manifest and _SUCCESS
                sidecars = (
                    NO_SIDECARS if quality is None else quality.sidecars(spec.out, out.parts, {**out.header, **lineage})
                )
                if isinstance(out, OutputDir):
                    lineage["summary"] = SUMMARY if quality else None
                    report.parts = out.commit(len(files), lineage, sidecars=sidecars)
                else:
                    report.parts = out.commit(len(files), lineage)
        finally:
            out.close()
    if _interrupt.pending() is not None:
        log.warning("a stop signal came in during the commit; the commit completed")
    if quality is not None:
        report.summary, checked = quality.result(spec.out)
        report.drift = None if checked is None else checked.to_dict()
    report.seconds = round(time.perf_counter() - started, 3)
    report.rows_per_s = round(report.rows_written / report.seconds, 1) if report.seconds else 0.0
    report.peak_rss_mb = round(peak_rss_mb(), 1)
    if spec.report:
        try:
            write_report(report, spec.report, options=spec.storage_options)
        except OutputError as exc:  # the output is committed: a lost report must not fail the run, nor its retries
            log.error("the output is committed, but the report is not: %s", exc)
    if quality is not None:
        quality.enforce()  # issue 11: on_drift="fail" raises DriftError (exit 6) here, after the commit
    return report


def dry_run(spec: JobSpec) -> dict[str, Any]:
    """Check everything a run would check, inputs to output folder, and say what it would do; score nothing."""
    ready = prepare(spec)
    files, model, plan = ready.files, ready.model, ready.plan
    out = _output(
        ready,
        mode=spec.mode,
        run_id="dry-run",
        metadata={},
        header=_header(ready, run_id="", started_at=""),
    )
    todo = out.check(files)
    owner = lock_owner(out.root) if isinstance(out, OutputDir) else {}
    if not isinstance(out, OutputDir):
        action = out.plan(files)
    elif out.pending_commit() is not None:
        action = "finish the commit a dead run left half done, then decide again"
    elif out.complete:
        action = f"nothing to do: all {len(files)} part(s) are committed for these inputs and this model"
    elif len(todo) < len(files):
        action = f"resume: keep {len(files) - len(todo)} committed part(s), score {len(todo)}"
    else:
        action = f"score {len(todo)} file(s) into {len(todo)} part(s)"
    return {
        "job": spec.job,
        "model": spec.model,
        "model_sha256": model.sha256 + (" (matches the pin)" if spec.model_sha256 else " (not pinned)"),
        "provider": model.provider,
        "inputs": [f"{f.path} ({f.num_rows:,} rows)" for f in files],
        "rows": sum(f.num_rows for f in files),
        "features": list(plan.features),
        "keep": list(plan.keep),
        "filter": spec.filter or "none",
        "outputs": [o.name for o in plan.outputs],
        "output": f"{spec.out} ({'Delta table, ' * (spec.format == 'delta')}mode {spec.mode}, {spec.compression}"
        + (f", partitioned by {', '.join(spec.partition_by)})" if spec.partition_by else ")"),
        "action": action,
        "lock": f"held by pid {owner.get('pid')} on {owner.get('host')} (or left by a dead run)" if owner else "free",
        "drift": _drift_plan(spec),  # issue 11
    }


def _drift_plan(spec: JobSpec) -> str:
    if spec.reference is None:
        return "not checked (no reference)" if spec.summary else "not checked (--no-summary)"
    found = "found" if summary_file(spec.reference) else "missing: a warning, drift not checked"
    return f"against {spec.reference} ({found}), max PSI {spec.max_psi:g}, on drift: {spec.on_drift}"


def _output(ready: Prepared, **options: Any) -> OutputDir | DeltaOutput:
    """Where the scores go: a folder of Parquet parts, or one commit to a Delta table (``format="delta"``)."""
    spec = ready.spec
    if spec.format == "delta":
        from batchscore.delta import DeltaOutput

        options.setdefault("partition_by", spec.partition_by)
        schema = ready.plan.output_schema(ready.files[0])
        return DeltaOutput(spec.out, schema=schema, schema_mode=spec.schema_mode, **options)
    return OutputDir(storage.resolve(spec.out, spec.storage_options), **options)


def _header(ready: Prepared, *, run_id: str, started_at: str) -> dict[str, Any]:
    """The manifest's identity and lineage: what made this output."""
    spec, files, model, plan = ready.spec, ready.files, ready.model, ready.plan
    return {
        "run_id": run_id,
        "job_file": spec.job,
        "spec": {**dataclasses.asdict(spec), "storage_options": _redacted(spec)},
        "spec_hash": manifest.spec_hash(ready.settings()),
        "model": spec.model,
        "model_sha256": model.sha256,
        "onnxruntime_version": ort.__version__,
        "provider": model.provider,
        "batchscore_version": __version__,
        "features": list(plan.features),
        "keep": list(plan.keep),
        "inputs": [{"path": f.path, "rows": f.num_rows, "fingerprint": f.fingerprint} for f in files],
        "started_at": started_at,
    }


def _redacted(spec: JobSpec) -> dict[str, object]:
    """The storage options without their secrets (keys, tokens), as the manifest may show them."""
    if not spec.storage_options:
        return {}
    from batchscore._objectstore import redact

    return redact(spec.storage_options)


@dataclass(frozen=True)
class _PartEnd:
    """Sent to the writer after a part's last batch."""

    null_counts: dict[str, int]


class _PartBatches:
    """The batches of one part as they come through the writer's queue, up to its end marker."""

    def __init__(self, first: pa.RecordBatch | _PartEnd, items: Iterator[tuple[int, pa.RecordBatch | _PartEnd]]):
        self._first = first
        self._items = items
        self.rows = 0
        self.end: _PartEnd | None = None
        """Set once the end marker arrived; None if the queue was abandoned mid-part."""

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        item = self._first
        while not isinstance(item, _PartEnd):
            self.rows += item.num_rows
            yield item
            following = next(self._items, None)
            if following is None:
                return
            item = following[1]
        self.end = item


_Assembled = tuple[int, pa.RecordBatch | None, "Assembled | dict[str, int]"]
"""What the assembly stage hands on: a batch and its model inputs, or a file's end and its null counts."""


def _stream(
    ready: Prepared,
    todo: list[int],
    out: OutputDir | DeltaOutput,
    report: RunReport,
    progress: ProgressCallback | None,
    quality: RunQuality | None = None,
) -> None:
    spec, files, model, plan, row_filter = ready.spec, ready.files, ready.model, ready.plan, ready.row_filter
    schema = plan.output_schema(files[0])
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
    total_rows = sum(files[i].num_rows for i in todo)
    columns = plan.read_columns
    filter_only = [c for c in row_filter.columns if c not in columns] if row_filter else []
    filtered_out = [0]

    def read() -> Iterator[tuple[int, pa.RecordBatch | None]]:
        for index in todo:
            file = files[index]
            for batch in iter_batches(file, columns + filter_only, batch_size=spec.batch_size):
                if row_filter is None:
                    yield index, batch
                    continue
                kept = row_filter.apply(batch, source=file.path)
                filtered_out[0] += batch.num_rows - kept.num_rows
                if kept.num_rows:
                    yield index, kept.select(columns) if filter_only else kept
            yield index, None

    dictionary = dictionary_columns(schema, also=[o.name for o in plan.outputs if o.role in ("label", "threshold")])

    def write(items: Iterator[tuple[int, pa.RecordBatch | _PartEnd]]) -> None:
        for index, first in items:
            batches = _PartBatches(first, items)
            names = out.write_part(index, schema, batches, dictionary=dictionary)
            if batches.end is None:
                return  # abandoned: the run failed
            entry = manifest.part_entry(
                index,
                files[index],
                files=names,
                rows=batches.rows,
                run_id=report.run_id,
                null_counts=batches.end.null_counts,
                committed_at=datetime.now(UTC).isoformat(timespec="seconds"),
            )
            out.finish_part(index, entry)

    def assemble(items: Iterable[tuple[int, pa.RecordBatch | None]]) -> Iterator[_Assembled]:
        for index, batch in items:
            if batch is None:  # the file is done: its null counts are complete here, not yet in the scoring thread
                yield index, None, dict(scorer.null_counts)
            else:
                yield index, batch, scorer.assemble(batch, source=files[index].path)

    reader = Prefetch(read(), depth=QUEUE_DEPTH, name="batchscore-read")
    stage = assemble(reader)
    assembled = Prefetch(stage, depth=QUEUE_DEPTH, name="batchscore-assemble") if overlap else None
    sink: Sink[tuple[int, pa.RecordBatch | _PartEnd]] = Sink(write, depth=QUEUE_DEPTH, name="batchscore-write")
    files_done = 0
    nulls_before: dict[str, int] = {}
    try:
        for index, batch, ready_batch in assembled or stage:
            _interrupt.check()
            if batch is None:
                assert isinstance(ready_batch, dict)
                files_done += 1
                nulls = {k: v - nulls_before.get(k, 0) for k, v in ready_batch.items()}
                nulls_before = ready_batch
                sink.put((index, _PartEnd({k: v for k, v in nulls.items() if v})))
                if quality is not None:
                    quality.finish(index)  # issue 11
                log.debug("scored %s (%d/%d)", files[index].path, files_done, len(todo))
                continue
            assert isinstance(ready_batch, Assembled)
            predicted = scorer.infer(ready_batch)
            if quality is not None:
                quality.update(index, batch, predicted)  # issue 11: features as read, outputs as scored
            columns_out = batch.columns[:keep_count] + predicted
            sink.put((index, pa.RecordBatch.from_arrays(columns_out, schema=schema)))
            report.rows_read += ready_batch.rows
            report.rows_written += ready_batch.rows
            if ready_batch.invalid is not None:
                report.rows_null_output += int(ready_batch.invalid.sum())
            if progress is not None:
                progress(Progress(report.rows_written, total_rows, files_done, len(todo)))
        sink.close()
    except BaseException:
        sink.abandon()
        raise
    finally:
        if assembled is not None:
            assembled.close()
        reader.close()
    report.rows_filtered = filtered_out[0]
    report.rows_read += report.rows_filtered
    report.null_counts = {k: v for k, v in scorer.null_counts.items() if v}
    if progress is not None:
        progress(Progress(report.rows_written, total_rows, files_done, len(todo)))


def _sum_counts(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for one in counts:
        for key, value in one.items():
            total[key] = total.get(key, 0) + value
    return total
