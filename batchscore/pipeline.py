"""reader -> features -> model -> writer, overlapped, with bounded memory.

Three threads: one reads Parquet batches (pyarrow releases the GIL while it
decodes), the caller's thread assembles features and runs the model
(onnxruntime releases the GIL), and one writes parts. Bounded queues connect
them, so a slow stage makes the others wait instead of piling batches up.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import onnxruntime as ort
import pyarrow as pa

from batchscore._threads import Prefetch, Sink
from batchscore._version import __version__
from batchscore.errors import OutputError
from batchscore.features import FeatureAssembler, FeaturePlan, plan_features
from batchscore.model import Model, decode_outputs
from batchscore.reader import InputFile, iter_batches, resolve_inputs, scan
from batchscore.spec import JobSpec
from batchscore.writer import OutputDir, dictionary_columns

log = logging.getLogger("batchscore")

QUEUE_DEPTH = 1


@dataclass(frozen=True)
class Progress:
    """What a progress callback is told after each scored batch."""

    rows: int
    total_rows: int
    files_done: int
    total_files: int


ProgressCallback = Callable[[Progress], None]


@dataclass
class RunReport:
    """What a run did; written as JSON by ``--report``."""

    run_id: str
    output: str
    model: str
    model_sha256: str
    provider: str
    onnxruntime_version: str
    batchscore_version: str
    features: list[str]
    keep: list[str]
    files: list[dict[str, Any]]
    parts: list[str] = field(default_factory=list)
    rows_read: int = 0
    rows_written: int = 0
    rows_null_output: int = 0
    null_counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    rows_per_s: float = 0.0
    peak_rss_mb: float = 0.0
    started_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass
class Prepared:
    """A run checked and ready: files scanned, model loaded, columns mapped."""

    spec: JobSpec
    files: list[InputFile]
    model: Model
    plan: FeaturePlan


def prepare(spec: JobSpec) -> Prepared:
    """Everything that can fail before the first row: inputs, model, device, mapping."""
    files = scan(resolve_inputs(spec.inputs))
    model = Model(spec.model, device=spec.device, threads=spec.threads)
    plan = plan_features(files, model, spec)
    log.info(
        "%d file(s), %d rows; model %s (%s, %d features) on %s",
        len(files),
        sum(f.num_rows for f in files),
        os.path.basename(spec.model),
        model.kind,
        len(plan.features),
        model.provider,
    )
    return Prepared(spec=spec, files=files, model=model, plan=plan)


def run(spec: JobSpec, *, progress: ProgressCallback | None = None) -> RunReport:
    """Score every input file into ``spec.out``; all or nothing."""
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
    out = OutputDir(spec.out, mode=spec.mode, run_id=run_id, metadata=metadata)
    out.prepare()
    try:
        _stream(ready, out, report, progress)
        report.parts = out.commit(len(files))
    except BaseException:
        out.abort()
        raise
    report.seconds = round(time.perf_counter() - started, 3)
    report.rows_per_s = round(report.rows_written / report.seconds, 1) if report.seconds else 0.0
    report.peak_rss_mb = round(peak_rss_mb(), 1)
    if spec.report:
        write_report(report, spec.report)
    return report


def _stream(ready: Prepared, out: OutputDir, report: RunReport, progress: ProgressCallback | None) -> None:
    spec, files, model, plan = ready.spec, ready.files, ready.model, ready.plan
    schema = plan.output_schema(files[0])
    assembler = FeatureAssembler(
        plan.features,
        dtype=plan.dtype,
        batch_size=spec.batch_size,
        on_null=spec.on_null,
        fill_value=spec.fill_value,
    )
    keep_count = len(plan.keep)
    total_rows = sum(f.num_rows for f in files)

    def read() -> Iterator[tuple[int, pa.RecordBatch | None]]:
        for index, file in enumerate(files):
            for batch in iter_batches(file, plan.read_columns, batch_size=spec.batch_size):
                yield index, batch
            yield index, None

    dictionary = dictionary_columns(schema, also=[o.name for o in plan.outputs if o.role == "label"])

    def write(items: Iterator[tuple[int, pa.RecordBatch | None]]) -> None:
        part = None
        for index, batch in items:
            if part is None:
                part = out.open_part(index, schema, dictionary=dictionary)
            if batch is None:
                part.close()
                part = None
            else:
                part.write(batch)

    reader = Prefetch(read(), depth=QUEUE_DEPTH, name="batchscore-read")
    sink: Sink[tuple[int, pa.RecordBatch | None]] = Sink(write, depth=QUEUE_DEPTH, name="batchscore-write")
    files_done = 0
    try:
        for index, batch in reader:
            if batch is None:
                files_done += 1
                sink.put((index, None))
                log.debug("scored %s (%d/%d)", files[index].path, files_done, len(files))
                continue
            rows = batch.num_rows
            matrix, invalid = assembler.assemble(batch, source=files[index].path)
            values = model.run({plan.input_name: matrix})
            predicted = decode_outputs(plan.outputs, values, rows=rows, mask=invalid)
            columns = batch.columns[:keep_count] + predicted
            sink.put((index, pa.RecordBatch.from_arrays(columns, schema=schema)))
            report.rows_read += rows
            report.rows_written += rows
            if invalid is not None:
                report.rows_null_output += int(invalid.sum())
            if progress is not None:
                progress(Progress(report.rows_written, total_rows, files_done, len(files)))
        sink.close()
    except BaseException:
        sink.abandon()
        raise
    finally:
        reader.close()
    report.null_counts = {k: v for k, v in assembler.null_counts.items() if v}
    if progress is not None:
        progress(Progress(report.rows_written, total_rows, files_done, len(files)))


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def write_report(report: RunReport, path: str) -> None:
    """Write the report as JSON, atomically."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({**report.to_dict(), "host": platform.node()}, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
    except OSError as exc:
        msg = f"cannot write report {path}: {exc}; check the path and permissions"
        raise OutputError(msg) from exc
