"""RecordBatch -> the model's input tensors.

:class:`FeatureAssembler` fills a reused, preallocated C-contiguous buffer
column by column, which is several times faster than ``np.column_stack``;
:class:`VectorAssembler` unpacks one list column into a ``[rows, F]`` matrix.
Both cast to the input's type and refuse casts that would change values: a
float with a fraction, or an integer out of range, going into an integer input,
or a finite float that becomes infinite in a narrower float.
Which columns feed which input is decided beforehand, in :mod:`batchscore.mapping`.

Plain numeric columns (the usual case) are read straight from their Arrow data
buffers, without a conversion object per column, and every copy runs in numpy
with the GIL released; other types (dictionaries, decimals, bools, strings)
go through Arrow's conversion. ``pyarrow.compute`` is imported only for those.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from batchscore.errors import JobSpecError, NullValuesError, SchemaMismatchError
from batchscore.spec import OnNull


def null_message(col: str, path: str, nulls: int, *, imputed_by: str | None = None) -> str:
    """The error for nulls in a feature column with on_null='error'.

    ``imputed_by``: the model input that imputes NaN itself, if the column feeds one; the fix is then to let
    the nulls reach it as NaN, which is what the model was trained on, not to fill them with a number.
    """
    if imputed_by is not None:
        return (
            f"feature column {col!r} has {nulls} null value(s) in {path}; model input {imputed_by!r} imputes "
            "missing values itself (an Imputer node reads it): pass --on-null fill and they reach it as NaN"
        )
    return (
        f"feature column {col!r} has {nulls} null value(s) in {path}; pass --on-null fill "
        "(with --fill-value) or --on-null skip, or clean the input"
    )


def fill_problem(fill_value: object, dtype: np.dtype[Any], *, input_desc: str) -> str | None:
    """Why ``fill_value`` cannot fill an integer or bool input (a fraction, NaN, out of range), or None."""
    if dtype.kind not in "iub" or not isinstance(fill_value, float):
        return None
    low, high = (0, 1) if dtype.kind == "b" else (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))
    if fill_value.is_integer() and low <= fill_value <= high:
        return None
    return f"--fill-value {fill_value} cannot fill model input {input_desc}; pass a whole number from {low} to {high}"


def check_values(values: np.ndarray, dtype: np.dtype[Any], *, column: str, input_name: str, source: str) -> None:
    """Raise unless ``values`` convert to an integer or bool input unchanged (whole numbers within range)."""
    if dtype.kind not in "iub" or values.size == 0 or np.can_cast(values.dtype, dtype, casting="safe"):
        return
    where = f"in {source}, but model input {input_name!r} is {dtype}"
    if values.dtype.kind == "f":
        fractional = ~np.isfinite(values) | (np.trunc(values) != values)
        if fractional.any():
            msg = (
                f"column {column!r} has {int(fractional.sum())} value(s) that are not whole numbers "
                f"(e.g. {values[fractional][0]}) {where}; round or cast the column, or map another one with --input"
            )
            raise SchemaMismatchError(msg)
    low, high = (0, 1) if dtype.kind == "b" else (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))
    if values.min() < low or values.max() > high:
        outside = (values < low) | (values > high)
        msg = (
            f"column {column!r} has {int(outside.sum())} value(s) outside {low}..{high} "
            f"(e.g. {values[outside][0]}) {where}; fix the values, or re-export the model with a wider input type"
        )
        raise SchemaMismatchError(msg)


def narrowing(source: np.dtype[Any], target: np.dtype[Any]) -> bool:
    """A float cast that can overflow: a wider float (or a decimal's float64) into a narrower float."""
    return target.kind == "f" and source.kind == "f" and source.itemsize > target.itemsize


def check_overflow(
    values: np.ndarray,
    converted: np.ndarray,
    *,
    column: str,
    input_name: str,
    source: str,
    nulls: np.ndarray | None = None,
) -> None:
    """Raise if a finite value became infinite in a narrowing float cast (``1e300`` into float32).

    ``nulls`` marks slots whose source values are not data (null rows, already replaced).
    """
    if not np.isinf(converted).any():
        return
    overflowed = np.isinf(converted) & np.isfinite(values)
    if nulls is not None:
        overflowed &= ~nulls
    if overflowed.any():
        msg = (
            f"column {column!r} has {int(overflowed.sum())} value(s) too large for model input {input_name!r} "
            f"({converted.dtype}, at most {np.finfo(converted.dtype).max:.3g}; e.g. {values[overflowed][0]:.6g}) "
            f"in {source}; fix or clip the values upstream, or re-export the model with a float64 input"
        )
        raise SchemaMismatchError(msg)


def _prepared(column: pa.Array) -> pa.Array:
    """Dictionaries decoded, decimals as float64: types ``to_numpy`` turns into plain numpy arrays."""
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if pa.types.is_decimal(column.type):
        import pyarrow.compute as pc

        column = pc.cast(column, pa.float64())
    return column


_PLAIN: dict[pa.DataType, np.dtype[Any]] = {
    pa.int8(): np.dtype(np.int8),
    pa.int16(): np.dtype(np.int16),
    pa.int32(): np.dtype(np.int32),
    pa.int64(): np.dtype(np.int64),
    pa.uint8(): np.dtype(np.uint8),
    pa.uint16(): np.dtype(np.uint16),
    pa.uint32(): np.dtype(np.uint32),
    pa.uint64(): np.dtype(np.uint64),
    pa.float16(): np.dtype(np.float16),
    pa.float32(): np.dtype(np.float32),
    pa.float64(): np.dtype(np.float64),
}
"""Arrow types whose data buffer is a plain numpy array, and its dtype."""


def plain_values(column: pa.Array) -> np.ndarray | None:
    """A zero-copy numpy view of a plain numeric column's data buffer, or None for any other type.

    Slots under nulls hold whatever the buffer holds there: the caller masks them.
    """
    dtype = _PLAIN.get(column.type)
    if dtype is None:
        return None
    data = column.buffers()[1]
    if data is None:  # an empty array may come without one
        return np.empty(0, dtype=dtype)
    return np.frombuffer(data, dtype=dtype, count=len(column), offset=column.offset * dtype.itemsize)


def null_mask(column: pa.Array) -> np.ndarray:
    """True where ``column`` is null, from its validity bitmap (the column has nulls)."""
    bitmap = column.buffers()[0]
    if bitmap is None:  # a null-typed column: every row is null
        return np.ones(len(column), dtype=bool)
    bits = np.unpackbits(np.frombuffer(bitmap, dtype=np.uint8), count=column.offset + len(column), bitorder="little")[
        column.offset :
    ]
    is_null: np.ndarray = bits == 0
    return is_null


def _all_finite(values: np.ndarray) -> bool:
    """True when every value is finite, as their sum is: one pass, no temporary (a sum that overflows says
    False, and the caller then looks value by value)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(np.add.reduce(values)))


def _zero(dtype: pa.DataType) -> object:
    """A placeholder for nulls before casting: always in range, replaced or masked afterwards."""
    if pa.types.is_boolean(dtype):
        return False
    return "" if not pa.types.is_integer(dtype) and not pa.types.is_floating(dtype) else 0


class FeatureAssembler:
    """Fills a reused ``[batch_size, n_features]`` C-contiguous buffer per batch, one column per feature.

    Each column is first cast into a row of a column-major scratch buffer
    (contiguous writes), then one transposing copy fills the row-major matrix:
    about 4x faster than writing columns into the row-major buffer directly.
    """

    def __init__(
        self,
        features: Sequence[str],
        *,
        dtype: np.dtype[Any],
        on_null: OnNull,
        fill_value: object,
        input_name: str = "",
        input_desc: str = "",
        imputes: bool = False,
        buffers: int = 1,
    ) -> None:
        self.features = list(features)
        self.on_null = on_null
        self.fill_value = fill_value
        """What nulls become with on_null='fill': a number, NaN, or "" for strings (see InputBinding.fill)."""
        self.dtype = dtype
        self.input_name = input_name
        self.imputes = imputes
        self._fill_problem = fill_problem(fill_value, dtype, input_desc=input_desc or input_name)
        self._count = max(buffers, 1)
        self._next = 0
        self._allocate(0, dtype)  # sized by the first batch: a large --batch-size costs nothing on small files
        self.null_counts = dict.fromkeys(self.features, 0)

    def _allocate(self, rows: int, dtype: np.dtype[Any]) -> None:
        self._scratch = np.empty((len(self.features), rows), dtype=dtype)
        self._buffers = [np.empty((rows, len(self.features)), dtype=dtype) for _ in range(self._count)]

    def assemble(self, batch: pa.RecordBatch, *, source: str) -> tuple[np.ndarray, np.ndarray | None]:
        """The model input for ``batch`` and a mask of rows to null out (None when every row is valid).

        The returned matrix is a view of one of ``buffers`` reused buffers, taken in turn: it stays
        valid until that many more calls.
        """
        rows = batch.num_rows
        if rows > self._scratch.shape[1]:
            self._allocate(rows, self._scratch.dtype)
        scratch = self._scratch[:, :rows]
        invalid: np.ndarray | None = None
        for j, name in enumerate(self.features):
            column = batch.column(name)
            nulls = column.null_count
            if nulls:
                self.null_counts[name] += nulls
                if self.on_null == "error":
                    imputed_by = self.input_name if self.imputes else None
                    raise NullValuesError(null_message(name, source, nulls, imputed_by=imputed_by))
                if self.on_null == "fill" and self._fill_problem:
                    raise JobSpecError(f"{self._fill_problem} (column {name!r} has nulls in {source})")
            # Straight from the buffer, unless nulls must be zeroed before an integer input's range check.
            values = plain_values(column) if self._float or not nulls else None
            if values is None:
                values, is_null = self._converted(column)
            else:
                is_null = null_mask(column) if nulls else None
            check_values(values, self.dtype, column=name, input_name=self.input_name, source=source)
            with np.errstate(over="ignore", invalid="ignore"):
                np.copyto(scratch[j], values, casting="unsafe")
            if is_null is not None:
                if self.on_null == "fill":
                    scratch[j, is_null] = self.fill_value
                else:
                    if self._float:  # the placeholder the slow path puts there too; these rows' outputs are nulled
                        scratch[j, is_null] = 0
                    invalid = is_null if invalid is None else invalid | is_null
            # One sum of the row just written, still in cache, says it is all finite; only if not is it looked at.
            if narrowing(values.dtype, self.dtype) and not _all_finite(scratch[j]):
                where = {"column": name, "input_name": self.input_name, "source": source}
                check_overflow(values, scratch[j], nulls=is_null, **where)
        out = self._buffers[self._next][:rows]
        self._next = (self._next + 1) % self._count
        np.copyto(out, scratch.T)
        return out, invalid

    @property
    def _float(self) -> bool:
        return self.dtype.kind == "f"

    def _converted(self, column: pa.Array) -> tuple[np.ndarray, np.ndarray | None]:
        """Any other column through Arrow: its values (nulls as a placeholder) and where the nulls are."""
        column = _prepared(column)
        is_null = None
        if column.null_count:
            is_null = null_mask(column)
            column = column.fill_null(_zero(column.type))
        return column.to_numpy(zero_copy_only=False), is_null


class VectorAssembler:
    """Unpacks one list (or fixed-size list) column into a ``[rows, F]`` matrix; every row must hold F values."""

    def __init__(
        self,
        column: str,
        *,
        width: int | None,
        dtype: np.dtype[Any],
        on_null: OnNull,
        fill_value: object,
        input_name: str,
        input_desc: str = "",
        imputes: bool = False,
    ) -> None:
        self.column = column
        self.width = width
        """F: declared by the model, or taken from the first row when the model leaves it open."""
        self.dtype = dtype
        self.on_null = on_null
        self.fill_value = fill_value
        self.input_name = input_name
        self.imputes = imputes
        self._fill_problem = fill_problem(fill_value, dtype, input_desc=input_desc or input_name)
        self.null_counts = {column: 0}

    def assemble(self, batch: pa.RecordBatch, *, source: str) -> tuple[np.ndarray, np.ndarray | None]:
        """The ``[rows, F]`` input for ``batch`` and a mask of rows to null out (None when every row is valid)."""
        import pyarrow.compute as pc  # list lengths; 0.1 s of import that runs without vector inputs skip

        column = batch.column(self.column)
        if pa.types.is_dictionary(column.type):
            column = column.dictionary_decode()
        rows = len(column)
        lengths = pc.list_value_length(column).fill_null(-1).to_numpy(zero_copy_only=False)
        valid = lengths >= 0
        if self.width is None and valid.any():
            self.width = int(lengths[valid][0])
        width = self.width or 0
        self._check_lengths(lengths, valid, width, source)
        flat = _prepared(column.flatten())
        element_nulls = flat.null_count
        row_nulls = rows - int(valid.sum())
        invalid: np.ndarray | None = None
        if element_nulls or row_nulls:
            self.null_counts[self.column] += element_nulls + row_nulls
            if self.on_null == "error":
                imputed_by = self.input_name if self.imputes else None
                raise NullValuesError(
                    null_message(self.column, source, element_nulls + row_nulls, imputed_by=imputed_by)
                )
            if self.on_null == "fill" and self._fill_problem:
                raise JobSpecError(f"{self._fill_problem} (column {self.column!r} has nulls in {source})")
        values = flat.fill_null(0).to_numpy(zero_copy_only=False) if element_nulls else flat.to_numpy()
        check_values(values, self.dtype, column=self.column, input_name=self.input_name, source=source)
        with np.errstate(over="ignore", invalid="ignore"):
            matrix = values.astype(self.dtype, copy=bool(element_nulls)).reshape(-1, width)
        if narrowing(values.dtype, self.dtype):
            check_overflow(values, matrix.reshape(-1), column=self.column, input_name=self.input_name, source=source)
        if element_nulls:
            null_at = flat.is_null().to_numpy(zero_copy_only=False).reshape(-1, width)
            if self.on_null == "fill":
                matrix[null_at] = self.fill_value
            else:
                invalid = np.zeros(rows, dtype=bool)
                invalid[np.flatnonzero(valid)[null_at.any(axis=1)]] = True
        if not row_nulls:
            return np.ascontiguousarray(matrix), invalid
        out = np.full((rows, width), self.fill_value if self.on_null == "fill" else 0, dtype=self.dtype)
        out[valid] = matrix
        if self.on_null == "skip":
            invalid = ~valid if invalid is None else invalid | ~valid
        return out, invalid

    def _check_lengths(self, lengths: np.ndarray, valid: np.ndarray, width: int, source: str) -> None:
        wrong = valid & (lengths != width)
        if not wrong.any():
            return
        found = sorted({int(n) for n in lengths[wrong]})
        shown = ", ".join(map(str, found[:5])) + (", ..." if len(found) > 5 else "")
        msg = (
            f"list column {self.column!r} has {int(wrong.sum())} row(s) whose length is not {width} "
            f"(lengths found: {shown}) in {source}; model input {self.input_name!r} takes exactly {width} values "
            "per row: fix or filter those rows"
        )
        raise SchemaMismatchError(msg)
