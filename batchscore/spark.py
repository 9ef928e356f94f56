"""Score a Spark DataFrame with ``df.mapInArrow``: the command line's mapping, checks, output columns and errors.

::

    fn, schema = batchscore.spark.score_function(df, "model.onnx", keep=["application_id"])
    scored = df.mapInArrow(fn, schema)

:func:`score_function` runs on the driver: it loads the model once (on the
CPU) and maps the DataFrame's columns to its inputs exactly as ``batchscore
score`` maps a Parquet file's, raising the same errors before any Spark task
starts, and gives the output schema (the keep columns, then the prediction
columns). The function it returns pickles small (the plan, not the model): in
each Python worker the model is loaded once, on first use, and kept for every
later partition that worker scores (Spark reuses its Python workers). Each
Arrow batch Spark hands over is scored by the same
:class:`~batchscore.scorer.BatchScorer` as the CLI's; value checks (nulls,
fractions, ranges, list lengths) raise the same errors, which Spark reports
wrapped in its own ``PythonException``.

Spark's partitioning, row order and commit apply: the rows come out in
Spark's order, so keep the id columns (``keep``) to join the scores back.
The model path must be readable by every executor (shared storage), or
shipped with ``spark.sparkContext.addFile(path)``. pyspark is imported only
here; without it, a one-line error names the extra: ``pip install
'batchscore[spark]'``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from typing import Any, Unpack

import pyarrow as pa

from batchscore.errors import JobSpecError, ModelError
from batchscore.frames import ScoreOptions
from batchscore.mapping import FeaturePlan, plan_features
from batchscore.model import Model
from batchscore.reader import InputFile
from batchscore.scorer import BatchScorer
from batchscore.spec import JobSpec

__all__ = ["ScoreFunction", "model_loads", "score_function"]

log = logging.getLogger("batchscore")

SOURCE = "the Spark DataFrame"
_models: dict[tuple[str, str, str, int | None], Model] = {}
_loads: dict[str, int] = {}


def score_function(
    data: Any, model: str | os.PathLike[str], **options: Unpack[ScoreOptions]
) -> tuple[ScoreFunction, Any]:
    """The function and output schema (a ``StructType``) for ``data.mapInArrow(fn, schema)``.

    ``data``: a Spark DataFrame, its schema (``StructType``), or a pyarrow Schema. ``model``: the ``.onnx``
    path (readable on the executors). The options are those of ``batchscore score`` by their ``JobSpec``
    names; ``keep`` defaults to every column that is not a feature, as on the command line. ``device`` and
    ``threads`` apply in the workers (default: the CPU, one thread per Spark task).
    """
    types = _pyspark_types()
    schema = data.schema if hasattr(data, "schema") and not isinstance(data, pa.Schema) else data
    arrow_schema = schema if isinstance(schema, pa.Schema) else types.to_arrow_schema(schema)
    unknown = sorted(set(options) - ScoreOptions.__optional_keys__)
    if unknown:
        takes = ", ".join(sorted(ScoreOptions.__optional_keys__))
        msg = f"unknown option(s) {', '.join(unknown)}; score_function takes {takes}"
        raise JobSpecError(msg)
    given: dict[str, Any] = dict(options)
    for name in ("features", "keep"):
        if given.get(name) is not None:
            given[name] = (given[name],) if isinstance(given[name], str) else tuple(given[name])
    given.setdefault("device", "cpu")
    spec = JobSpec(inputs=(SOURCE,), model=os.fspath(model), out="-", **given)
    checked = Model(spec.model, device="cpu", threads=1)  # the driver only checks: workers load their own
    plan = plan_features([InputFile(path=SOURCE, schema=arrow_schema, num_rows=0)], checked, spec)
    output = plan.output_schema(InputFile(path=SOURCE, schema=arrow_schema, num_rows=0))
    return ScoreFunction(spec, plan, checked.sha256, output), types.from_arrow_schema(output)


class ScoreFunction:
    """``Iterator[pa.RecordBatch] -> Iterator[pa.RecordBatch]`` for ``mapInArrow``; pickles without the model."""

    def __init__(self, spec: JobSpec, plan: FeaturePlan, sha256: str, schema: pa.Schema) -> None:
        self.spec = spec
        self.plan = plan
        self.sha256 = sha256
        self.schema = schema
        """The output batches' schema: keep columns, then the prediction columns."""

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        spec, plan = self.spec, self.plan
        model = _worker_model(spec, self.sha256)
        scorer = BatchScorer(model, plan, on_null=spec.on_null, fill_value=spec.fill_value)
        source = _partition()
        keep = [self.schema.field(i) for i in range(len(plan.keep))]
        for batch in batches:
            projected = batch.select(plan.read_columns)
            predicted, _ = scorer.score(projected, source=source)
            kept = [_as(projected.column(f.name), f.type) for f in keep]
            yield pa.RecordBatch.from_arrays(kept + predicted, schema=self.schema)


def model_loads(sha256: str) -> int:
    """How many times this Python process loaded the model of this sha256 to score (once, then it is kept)."""
    return _loads.get(sha256, 0)


def _worker_model(spec: JobSpec, sha256: str) -> Model:
    key = (spec.model, sha256, spec.device, spec.threads)
    model = _models.get(key)
    if model is None:
        path = spec.model
        if not os.path.isfile(path):  # shipped with sparkContext.addFile?
            from pyspark import SparkFiles

            shipped = SparkFiles.get(os.path.basename(path))
            path = shipped if os.path.isfile(shipped) else path
        model = Model(path, device=spec.device, threads=spec.threads or 1)
        _loads[sha256] = _loads.get(sha256, 0) + 1
        if model.sha256 != sha256:
            msg = (
                f"model {path} on this Spark executor has sha256 {model.sha256}, but the driver checked {sha256}; "
                "every executor must read the same model file"
            )
            raise ModelError(msg)
        _models[key] = model
    return model


def _partition() -> str:
    from pyspark import TaskContext

    context = TaskContext.get()
    return f"{SOURCE} (partition {context.partitionId()})" if context is not None else SOURCE


def _as(column: pa.Array, dtype: pa.DataType) -> pa.Array:
    """A kept column in the declared type (Spark may hand strings over as large strings)."""
    return column if column.type == dtype else column.cast(dtype)


def _pyspark_types() -> Any:
    try:
        from pyspark.sql.pandas import types
    except ImportError:
        msg = "batchscore.spark needs pyspark, which is not installed: pip install 'batchscore[spark]'"
        raise JobSpecError(msg) from None
    return types
