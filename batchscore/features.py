"""RecordBatch -> the model's input matrix.

:func:`plan_features` decides, before any row is scored, which columns feed the
model and which pass through, and checks every input file against the model.
:class:`FeatureAssembler` then fills a reused, preallocated C-contiguous buffer
column by column, which is several times faster than ``np.column_stack``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batchscore.errors import JobSpecError, NullValuesError, SchemaMismatchError
from batchscore.model import Model, OutputColumn
from batchscore.reader import InputFile
from batchscore.spec import JobSpec, OnNull


@dataclass(frozen=True)
class FeaturePlan:
    """Which columns feed the model, which pass through, and what scoring adds."""

    features: tuple[str, ...]
    keep: tuple[str, ...]
    input_name: str
    dtype: np.dtype[np.floating]
    outputs: tuple[OutputColumn, ...]

    @property
    def read_columns(self) -> list[str]:
        """The only columns read from the files: passthroughs, then features."""
        return list(self.keep) + [f for f in self.features if f not in self.keep]

    def output_schema(self, reference: InputFile) -> pa.Schema:
        """Keep columns with their input types, then the prediction columns."""
        fields = [reference.field(c).with_nullable(True) for c in self.keep]
        return pa.schema(fields + [pa.field(o.name, o.type) for o in self.outputs])


def is_numeric(dtype: pa.DataType) -> bool:
    """Column types a numeric feature may have: ints, floats, bools, decimals."""
    return bool(
        pa.types.is_integer(dtype)
        or pa.types.is_floating(dtype)
        or pa.types.is_boolean(dtype)
        or pa.types.is_decimal(dtype)
    )


def plan_features(files: Sequence[InputFile], model: Model, spec: JobSpec) -> FeaturePlan:
    """Map columns to the model and check every file; raise before the first row is scored."""
    first = files[0]
    model_input = model.input
    if spec.features is not None:
        features = spec.features
    else:
        excluded = set(spec.keep or ()) | set(first.partitions)
        features = tuple(c for c in first.schema.names if c not in excluded and is_numeric(first.field(c).type))
    keep = spec.keep if spec.keep is not None else tuple(c for c in first.columns if c not in features)

    for file in files:
        _check_file(file, first, features, keep)

    want = model.feature_dim
    if want is not None and len(features) != want:
        where = "the --features list has" if spec.features is not None else "the data has"
        listed = ", ".join(features)
        fix = (
            "pass --features with exactly the model's columns in training order"
            if spec.features is not None
            else "pass --keep with the id and other non-feature numeric columns, or --features with the model's columns"
        )
        msg = (
            f"model input {model_input.name!r} wants {want} features, but {where} {len(features)} "
            f"numeric feature columns ({listed}) in {first.path}; {fix}"
        )
        raise SchemaMismatchError(msg)
    if not features:
        msg = f"no numeric feature column found in {first.path} (columns: {', '.join(first.columns)}); pass --features"
        raise SchemaMismatchError(msg)

    outputs = tuple(model.output_columns(prediction_col=spec.prediction_col, prob_format=spec.prob_format))
    clashes = [o.name for o in outputs if o.name in keep]
    if clashes:
        msg = (
            f"output column(s) {', '.join(map(repr, clashes))} would overwrite input column(s) of the same name; "
            "pass --prediction-col NAME, or leave them out of --keep"
        )
        raise JobSpecError(msg)

    if spec.on_null == "error":
        for file in files:
            for col in features:
                nulls = file.null_counts.get(col)
                if nulls:
                    raise NullValuesError(_null_message(col, file.path, nulls))
    assert model_input.dtype is not None
    return FeaturePlan(
        features=tuple(features),
        keep=tuple(keep),
        input_name=model_input.name,
        dtype=np.dtype(model_input.dtype),
        outputs=outputs,
    )


def _check_file(file: InputFile, first: InputFile, features: Sequence[str], keep: Sequence[str]) -> None:
    available = file.columns
    missing = [c for c in (*features, *keep) if c not in available]
    if missing:
        role = "feature" if missing[0] in features else "keep"
        msg = (
            f"{role} column(s) {', '.join(map(repr, missing))} not found in {file.path} "
            f"(it has: {_short_list(available)}); fix the column list or the input"
        )
        raise SchemaMismatchError(msg)
    for col in features:
        dtype = file.field(col).type
        if not is_numeric(dtype):
            msg = (
                f"feature column {col!r} in {file.path} is {dtype}, but model features must be numeric "
                "(int, float, bool or decimal); leave it out of --features or pass it through with --keep"
            )
            raise SchemaMismatchError(msg)
    for col in keep:
        expected, found = first.field(col).type, file.field(col).type
        if found != expected:
            msg = (
                f"keep column {col!r} is {found} in {file.path} but {expected} in {first.path}; "
                "every input file must give a passthrough column the same type"
            )
            raise SchemaMismatchError(msg)


def _short_list(names: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... {len(names) - limit} more" if len(names) > limit else "")


def _null_message(col: str, path: str, nulls: int) -> str:
    return (
        f"feature column {col!r} has {nulls} null value(s) in {path}; pass --on-null fill "
        "(with --fill-value) or --on-null skip, or clean the input"
    )


class FeatureAssembler:
    """Fills one reused ``[batch_size, n_features]`` C-contiguous buffer per batch.

    Each column is first cast into a row of a column-major scratch buffer
    (contiguous writes), then one transposing copy fills the row-major matrix:
    about 4x faster than writing columns into the row-major buffer directly.
    """

    def __init__(
        self,
        features: Sequence[str],
        *,
        dtype: np.dtype[np.floating],
        batch_size: int,
        on_null: OnNull,
        fill_value: float,
    ) -> None:
        self.features = list(features)
        self.on_null = on_null
        self.fill_value = fill_value
        self._allocate(batch_size, dtype)
        self.null_counts = dict.fromkeys(self.features, 0)

    def _allocate(self, rows: int, dtype: np.dtype[np.floating]) -> None:
        self._scratch = np.empty((len(self.features), rows), dtype=dtype)
        self._buffer = np.empty((rows, len(self.features)), dtype=dtype)

    def assemble(self, batch: pa.RecordBatch, *, source: str) -> tuple[np.ndarray, np.ndarray | None]:
        """The model input for ``batch`` and a mask of rows to null out (None when every row is valid).

        The returned matrix is a view of the shared buffer: use it before the next call.
        """
        rows = batch.num_rows
        if rows > self._buffer.shape[0]:
            self._allocate(rows, self._buffer.dtype)
        scratch = self._scratch[:, :rows]
        invalid: np.ndarray | None = None
        for j, name in enumerate(self.features):
            column = batch.column(name)
            if pa.types.is_decimal(column.type):
                column = pc.cast(column, pa.float64())
            is_null = None
            if column.null_count:
                nulls = column.null_count
                self.null_counts[name] += nulls
                if self.on_null == "error":
                    raise NullValuesError(_null_message(name, source, nulls))
                is_null = column.is_null().to_numpy(zero_copy_only=False)
                column = column.fill_null(False if pa.types.is_boolean(column.type) else 0)
            np.copyto(scratch[j], column.to_numpy(zero_copy_only=False), casting="unsafe")
            if is_null is not None:
                if self.on_null == "fill":
                    scratch[j, is_null] = self.fill_value
                else:
                    invalid = is_null if invalid is None else invalid | is_null
        out = self._buffer[:rows]
        np.copyto(out, scratch.T)
        return out, invalid
