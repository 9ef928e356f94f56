"""The driver: check everything, plan the tasks, hand them to an engine, record the parts, commit.

Everything that can fail before the first row is scored is done here first
(:func:`prepare`: inputs and their footers, model and pin, device, column
mapping, filter, partitions), then the output folder is locked and resume
decided. The work in between is a list of tasks (:mod:`batchscore.tasks`), run
by an engine (:mod:`batchscore.engines`: the threaded pipeline in this process,
worker processes, or Ray actors), each writing its staged part. Only the
driver records finished parts and commits.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import onnxruntime as ort

from batchscore import _interrupt, manifest, storage
from batchscore._version import __version__
from batchscore.engines import engine_for
from batchscore.errors import BatchScoreError, JobSpecError, ModelError, OutputError, SchemaMismatchError
from batchscore.mapping import FeaturePlan, plan_features
from batchscore.model import Model
from batchscore.quality import NO_SIDECARS, RunQuality
from batchscore.reader import InputFile, find_inputs, scan
from batchscore.report import Progress, ProgressCallback, RunReport, check_report_path, peak_rss_mb, write_report
from batchscore.rowfilter import RowFilter
from batchscore.spec import JobSpec
from batchscore.summary import SUMMARY, Summary, merge_all
from batchscore.summary import find as summary_file
from batchscore.tasks import Task, TaskResult, Work, plan_tasks
from batchscore.writer import OutputDir, lock_owner

if TYPE_CHECKING:
    from batchscore.delta import DeltaOutput

log = logging.getLogger("batchscore")


@dataclass
class Prepared:
    """A run checked and ready: files scanned, model loaded (and its pin checked), columns mapped."""

    spec: JobSpec
    files: list[InputFile]
    model: Model
    plan: FeaturePlan
    row_filter: RowFilter | None = None

    @property
    def provider(self) -> str:
        """Where the model runs: the driver's session, or, on Ray, the device the actors are given."""
        if self.spec.engine == "ray":  # the driver (maybe a head node without GPU) only checked on the CPU
            return "CUDAExecutionProvider" if self.spec.device == "cuda" else "CPUExecutionProvider"
        return str(self.model.provider)

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
    # Ray actors load the model on their own nodes: the driver only needs it for the checks.
    device = "cpu" if spec.engine == "ray" else spec.device
    model = Model(spec.model, device=device, threads=spec.threads, storage_options=options)
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
    ready = Prepared(spec=spec, files=files, model=model, plan=plan, row_filter=row_filter)
    log.info(
        "%d file(s), %d rows; model %s (%s, %d features) on %s",
        len(files),
        sum(f.num_rows for f in files),
        os.path.basename(spec.model),
        model.kind,
        len(plan.features),
        ready.provider,
    )
    return ready


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
        provider=ready.provider,
        onnxruntime_version=ort.__version__,
        batchscore_version=__version__,
        features=list(plan.features),
        keep=list(plan.keep),
        files=[{"path": f.path, "rows": f.num_rows} for f in files],
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        engine=spec.engine,
    )
    metadata = {
        "run_id": run_id,
        "created_at": report.started_at,
        "model": spec.model,
        "model_sha256": model.sha256,
        "onnxruntime_version": ort.__version__,
        "provider": ready.provider,
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
                _score(ready, plan_tasks(files, todo), out, report, progress, quality)
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
    tasks = plan_tasks(files, todo) if not out.complete else []
    pieces = len(tasks) - len({t.index for t in tasks})
    engine = spec.engine + (f", {spec.workers} worker(s)" if spec.workers else "")
    engine += f", {spec.ray_address}" if spec.ray_address else ""
    engine += f": {len(tasks)} task(s)" + (f" ({pieces} more for large files cut into pieces)" if pieces else "")
    return {
        "job": spec.job,
        "model": spec.model,
        "model_sha256": model.sha256 + (" (matches the pin)" if spec.model_sha256 else " (not pinned)"),
        "provider": ready.provider,
        "inputs": [f"{f.path} ({f.num_rows:,} rows)" for f in files],
        "rows": sum(f.num_rows for f in files),
        "features": list(plan.features),
        "keep": list(plan.keep),
        "filter": spec.filter or "none",
        "outputs": [o.name for o in plan.outputs],
        "output": f"{spec.out} ({'Delta table, ' * (spec.format == 'delta')}mode {spec.mode}, {spec.compression}"
        + (f", partitioned by {', '.join(spec.partition_by)})" if spec.partition_by else ")"),
        "action": action,
        "engine": engine,
        "lock": f"held by pid {owner.get('pid')} on {owner.get('host')} (or left by a dead run)" if owner else "free",
        "drift": _drift_plan(spec),  # issue 11
    }


def _drift_plan(spec: JobSpec) -> str:
    if spec.reference is None:
        return "not checked (no reference)" if spec.summary else "not checked (--no-summary)"
    found = summary_file(spec.reference, options=spec.storage_options) is not None
    state = "found" if found else "missing: a warning, drift not checked"
    return f"against {spec.reference} ({state}), max PSI {spec.max_psi:g}, on drift: {spec.on_drift}"


def _output(ready: Prepared, **options: Any) -> OutputDir | DeltaOutput:
    """Where the scores go: a folder of Parquet parts, or one commit to a Delta table (``format="delta"``)."""
    spec = ready.spec
    if spec.format == "delta":
        from batchscore.delta import DeltaOutput

        options.setdefault("partition_by", spec.partition_by)
        schema = ready.plan.output_schema(ready.files[0])
        return DeltaOutput(
            spec.out, schema=schema, schema_mode=spec.schema_mode, storage_options=spec.storage_options, **options
        )
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
        "provider": ready.provider,
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


def _score(
    ready: Prepared,
    tasks: Sequence[Task],
    out: OutputDir | DeltaOutput,
    report: RunReport,
    progress: ProgressCallback | None,
    quality: RunQuality | None = None,
) -> None:
    """Hand the tasks to the engine; record each input's part (and its summary) as its last task ends."""
    spec = ready.spec
    work = Work(
        spec=spec,
        files=ready.files,
        plan=ready.plan,
        # workers write into the run's staging area; a Delta table takes every part through its one writer (local)
        staging=out.staging if isinstance(out, OutputDir) else out,
        model_sha256=ready.model.sha256,
        provider=ready.provider,
        summary=None if quality is None else quality.template.to_bytes(),
    )
    parts = _Parts(ready.files, tasks, out, report, progress, quality)
    report.workers = engine_for(spec, ready.model).run(work, tasks, done=parts.done, scored=parts.scored)
    parts.scored(0)


class _Parts:
    """The driver's side of the tasks: counts rows for progress, and records a part once all its tasks are done."""

    def __init__(
        self,
        files: list[InputFile],
        tasks: Sequence[Task],
        out: OutputDir | DeltaOutput,
        report: RunReport,
        progress: ProgressCallback | None,
        quality: RunQuality | None,
    ) -> None:
        self.files = files
        self.out = out
        self.quality = quality
        self.report = report
        self.progress = progress
        self.pieces = {t.index: t.pieces for t in tasks}
        self.total_rows = sum(t.rows for t in tasks)
        self.rows = 0
        self.files_done = 0
        self.finished: dict[int, list[TaskResult]] = {}
        self._lock = threading.Lock()  # the local engine reports rows from its scoring thread, parts from its writer

    def scored(self, rows: int) -> None:
        """``rows`` more rows scored, in any worker."""
        with self._lock:
            self.rows += rows
            now = Progress(self.rows, self.total_rows, self.files_done, len(self.pieces))
        if self.progress is not None:
            self.progress(now)

    def done(self, result: TaskResult) -> None:
        """A task's part is staged; when it is its input's last, the input's part is recorded (in resume: committed)."""
        report, index = self.report, result.task.index
        with self._lock:
            report.rows_written += result.rows
            report.rows_filtered += result.rows_filtered
            report.rows_read += result.rows + result.rows_filtered
            report.rows_null_output += result.rows_null_output
            report.null_counts = _sum_counts([report.null_counts, result.null_counts])
            results = self.finished.setdefault(index, [])
            results.append(result)
            if len(results) < self.pieces[index]:
                return
            del self.finished[index]
        results.sort(key=lambda r: r.task.piece or 0)
        entry = manifest.part_entry(
            index,
            self.files[index],
            files=[name for r in results for name in r.files],
            rows=sum(r.rows for r in results),
            run_id=report.run_id,
            null_counts=_sum_counts(r.null_counts for r in results),
            committed_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        if self.quality is not None:  # issue 11: the part's summary, its pieces merged
            pieces = [Summary.from_bytes(r.summary) for r in results if r.summary is not None]
            self.quality.parts[index] = merge_all(pieces) or self.quality.template.empty()
        self.out.finish_part(index, entry)
        with self._lock:
            self.files_done += 1
        log.debug("scored %s (%d/%d)", self.files[index].path, self.files_done, len(self.pieces))


def _sum_counts(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for one in counts:
        for key, value in one.items():
            total[key] = total.get(key, 0) + value
    return total
