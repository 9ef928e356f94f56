"""The Python API: score a DataFrame, LazyFrame, pyarrow Table or Parquet path in memory.

Frames go to Arrow RecordBatches, through the same :class:`~batchscore.scorer.BatchScorer`
the command line uses, and come back as the same kind of frame with the
prediction columns added. A Polars LazyFrame stays lazy: scoring runs inside
``map_batches`` when the frame is collected, batch by batch on the streaming engine.
pandas is imported only when a pandas DataFrame is passed.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict, Unpack, overload

import pyarrow as pa

from batchscore.errors import JobSpecError, SchemaMismatchError
from batchscore.mapping import FeaturePlan, plan_features
from batchscore.model import Model
from batchscore.reader import InputFile, iter_batches, resolve_inputs, scan
from batchscore.scorer import BatchScorer
from batchscore.spec import Device, JobSpec, OnNull, ProbFormat

if TYPE_CHECKING:
    import polars as pl

log = logging.getLogger("batchscore")

Frame = Any
"""A Polars DataFrame or LazyFrame, a pandas DataFrame, a pyarrow Table, or a Parquet file, directory or glob."""


class ScoreOptions(TypedDict, total=False):
    """The keyword options of :func:`score`: the JobSpec fields of the same names."""

    features: Sequence[str] | None
    keep: Sequence[str] | None
    input_columns: Mapping[str, str | Sequence[str]]
    output_columns: Mapping[str, str]
    threshold: float | None
    with_score: bool
    on_null: OnNull
    fill_value: float | None
    prob_format: ProbFormat
    prediction_col: str
    batch_size: int
    device: Device
    threads: int | None


@overload
def score(
    data: pl.LazyFrame, model: Model | str | os.PathLike[str], **options: Unpack[ScoreOptions]
) -> pl.LazyFrame: ...
@overload
def score(
    data: pl.DataFrame, model: Model | str | os.PathLike[str], **options: Unpack[ScoreOptions]
) -> pl.DataFrame: ...
@overload
def score(data: Frame, model: Model | str | os.PathLike[str], **options: Unpack[ScoreOptions]) -> Any: ...
def score(data: Frame, model: Model | str | os.PathLike[str], **options: Unpack[ScoreOptions]) -> Any:
    """Score ``data`` with ``model``; return the same kind of frame with the prediction columns added.

    ``data``: a Polars DataFrame or LazyFrame, a pandas DataFrame, a pyarrow Table, or a
    Parquet file, directory or glob (read with the CLI's reader, returned as a Polars DataFrame).
    ``model``: an ``.onnx`` path, or a loaded :class:`batchscore.Model` to score many frames
    without reloading. The options are those of ``batchscore score``; every column is kept
    unless ``keep`` names some. Raises the errors the CLI reports, before any row is scored.
    """
    import polars as pl  # imported here: the command line never needs it

    spec, loaded = _prepare(model, options, label=_label(data))
    if isinstance(data, pl.LazyFrame):
        return _score_lazy(data, loaded, spec)
    if isinstance(data, pl.DataFrame):
        table = data.to_arrow()
        predicted = _score_table(table, loaded, spec, label="the DataFrame")
        base = data if spec.keep is None else data.select(list(spec.keep))
        return base.hstack(pl.from_arrow(predicted).get_columns())  # type: ignore[union-attr]
    if isinstance(data, pa.Table):
        predicted = _score_table(data, loaded, spec, label="the Table")
        base = data if spec.keep is None else data.select(list(spec.keep))
        for name, column in zip(predicted.column_names, predicted.columns, strict=True):
            base = base.append_column(name, column)
        return base
    if _is_pandas(data):
        import pandas as pd

        table = _from_pandas(data)
        predicted = _score_table(table, loaded, spec, label="the pandas DataFrame").to_pandas()
        predicted.index = data.index
        base = data if spec.keep is None else data[list(spec.keep)]
        return pd.concat([base, predicted], axis=1)
    if isinstance(data, str | os.PathLike):
        return _score_path(os.fspath(data), loaded, spec)
    msg = (
        f"cannot score a {type(data).__module__}.{type(data).__qualname__}; pass a Polars DataFrame or LazyFrame, "
        "a pandas DataFrame, a pyarrow Table, or a Parquet path"
    )
    raise JobSpecError(msg)


def _prepare(model: Model | str | os.PathLike[str], options: Mapping[str, Any], *, label: str) -> tuple[JobSpec, Model]:
    unknown = sorted(set(options) - ScoreOptions.__optional_keys__)
    if unknown:
        msg = (
            f"unknown option(s) {', '.join(unknown)}; score() takes {', '.join(sorted(ScoreOptions.__optional_keys__))}"
        )
        raise JobSpecError(msg)
    given = dict(options)
    for name in ("features", "keep"):
        if given.get(name) is not None:
            given[name] = (given[name],) if isinstance(given[name], str) else tuple(given[name])
    if isinstance(model, Model):
        if "device" in given or "threads" in given:
            msg = "device and threads are chosen when the Model is loaded; pass them to batchscore.Model(...) instead"
            raise JobSpecError(msg)
        path = model.path
    else:
        path = os.fspath(model)
    spec = JobSpec(inputs=(label,), model=path, out="-", **given)
    loaded = model if isinstance(model, Model) else Model(path, device=spec.device, threads=spec.threads)
    return spec, loaded


def _plan(source: InputFile, model: Model, spec: JobSpec) -> FeaturePlan:
    return plan_features([source], model, spec, keep_features=True)


def _source(schema: pa.Schema, *, label: str, rows: int = 0, nulls: dict[str, int | None] | None = None) -> InputFile:
    return InputFile(path=label, schema=schema, num_rows=rows, null_counts=nulls or {})


def _score_table(table: pa.Table, model: Model, spec: JobSpec, *, label: str) -> pa.Table:
    """Only the prediction columns, one row per row of ``table``."""
    nulls: dict[str, int | None] = {name: _null_count(table.column(name)) for name in table.column_names}
    plan = _plan(_source(table.schema, label=label, rows=table.num_rows, nulls=nulls), model, spec)
    return _predict(table.to_batches(max_chunksize=spec.batch_size), model, plan, spec, label=label)


def _predict(
    batches: Sequence[pa.RecordBatch], model: Model, plan: FeaturePlan, spec: JobSpec, *, label: str
) -> pa.Table:
    scorer = BatchScorer(model, plan, on_null=spec.on_null, fill_value=spec.fill_value)
    chunks: list[list[pa.Array]] = [[] for _ in plan.outputs]
    for batch in batches:
        predicted, _ = scorer.score(batch, source=label)
        for chunk, array in zip(chunks, predicted, strict=True):
            chunk.append(array)
    columns = [pa.chunked_array(chunk, o.type) for chunk, o in zip(chunks, plan.outputs, strict=True)]
    return pa.Table.from_arrays(columns, names=[o.name for o in plan.outputs])


def _score_lazy(frame: pl.LazyFrame, model: Model, spec: JobSpec) -> pl.LazyFrame:
    import polars as pl

    schema = frame.collect_schema()
    arrow_schema = pl.DataFrame(schema=schema).to_arrow().schema
    label = "the LazyFrame"
    plan = _plan(_source(arrow_schema, label=label), model, spec)
    empty = pa.Table.from_arrays([pa.array([], o.type) for o in plan.outputs], names=[o.name for o in plan.outputs])
    kept = {name: schema[name] for name in (spec.keep if spec.keep is not None else schema.names())}
    out_schema = {**kept, **pl.from_arrow(empty).schema}  # type: ignore[union-attr]

    def batch(df: pl.DataFrame) -> pl.DataFrame:
        table = df.to_arrow()
        predicted = _predict(table.to_batches(max_chunksize=spec.batch_size), model, plan, spec, label=label)
        return df.select(list(kept)).hstack(pl.from_arrow(predicted).get_columns())  # type: ignore[union-attr]

    return frame.map_batches(batch, schema=out_schema, streamable=True)


def _score_path(path: str, model: Model, spec: JobSpec) -> pl.DataFrame:
    import polars as pl

    files = scan(resolve_inputs([path]))
    plan = plan_features(files, model, spec, keep_features=True)
    schema = plan.output_schema(files[0])
    scorer = BatchScorer(model, plan, on_null=spec.on_null, fill_value=spec.fill_value)
    keep_count = len(plan.keep)
    batches = []
    for file in files:
        for batch in iter_batches(file, plan.read_columns, batch_size=spec.batch_size):
            predicted, _ = scorer.score(batch, source=file.path)
            batches.append(pa.RecordBatch.from_arrays(batch.columns[:keep_count] + predicted, schema=schema))
    log.debug("scored %d file(s) from %s", len(files), path)
    return pl.from_arrow(pa.Table.from_batches(batches, schema=schema))  # type: ignore[return-value]


def _null_count(column: pa.ChunkedArray) -> int:
    """Null values: null rows, plus null elements inside the lists of a list column."""
    nulls: int = column.null_count
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type) or pa.types.is_fixed_size_list(column.type):
        nulls += sum(chunk.flatten().null_count for chunk in column.chunks)
    return nulls


def _from_pandas(frame: Any) -> pa.Table:
    """A pandas frame as Arrow. NaN is pandas' missing value, so a NaN float becomes a null (as ``df.isna()``
    says and ``df.to_parquet`` writes); a column pyarrow cannot type is a SchemaMismatchError naming it."""
    names = [str(c) for c in frame.columns]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        msg = f"the pandas DataFrame has column name(s) {', '.join(map(repr, twice))} more than once; rename them"
        raise SchemaMismatchError(msg)
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        error: BaseException = exc
    for name in frame.columns:
        try:
            pa.array(frame[name], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            error = exc
            column = frame[name]
            msg = (
                f"pandas column {name!r} ({column.dtype}) cannot be converted to Arrow: {_one_line(exc)}; "
                f"give it one type, e.g. df[{name!r}].astype(str) or pd.to_numeric(df[{name!r}], errors='coerce')"
            )
            raise SchemaMismatchError(msg) from exc
    msg = f"the pandas DataFrame cannot be converted to Arrow: {_one_line(error)}; give each column one type"
    raise SchemaMismatchError(msg) from error


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(a) for a in exc.args) if exc.args else str(exc)
    return " ".join(text.split()) or type(exc).__name__


def _is_pandas(data: object) -> bool:
    pd = sys.modules.get("pandas")  # a pandas frame means pandas is imported already
    return pd is not None and isinstance(data, pd.DataFrame)


def _label(data: object) -> str:
    if isinstance(data, str | os.PathLike):
        return os.fspath(data)
    return f"the {type(data).__qualname__}"
