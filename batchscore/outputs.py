"""What scoring adds: the output columns a model gives and their decoding into Arrow.

Classifiers give a prediction and per-class probabilities (or one list column),
optionally a score and a threshold decision; regressors a prediction; any other
model one column per output tensor. ``--output NAME=COLUMN`` picks and renames.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa

from batchscore.errors import JobSpecError, ModelError
from batchscore.spec import ProbFormat

if TYPE_CHECKING:
    from batchscore.model import Model, TensorInfo


@dataclass(frozen=True)
class OutputColumn:
    """One output column: its name, Arrow type, and where its values come from."""

    name: str
    type: pa.DataType
    source: str
    """The model output it is read from."""
    role: Literal["label", "prob", "probs", "value", "list", "threshold", "score"]
    index: int = 0
    """Class index for role 'prob'; the positive class for role 'threshold'."""
    threshold: float | None = None
    """Roles 'threshold' and 'score': the positive class wins when its probability >= threshold."""
    classes: tuple[Any, ...] = ()
    """Role 'threshold': the class labels, negative first."""


def output_columns(
    model: Model,
    *,
    prediction_col: str,
    prob_format: ProbFormat,
    threshold: float | None = None,
    with_score: bool = False,
    rename: Mapping[str, str] | None = None,
) -> list[OutputColumn]:
    """The columns scoring adds, in order.

    By default: the prediction, then the probabilities (and the score), or one column per output.
    ``rename`` (``--output NAME=COLUMN``) picks and renames, NAME being a default column or a model output.
    """
    if threshold is not None and not model.is_binary:
        msg = f"--threshold needs a binary classifier, but {model.path} is {model.kind_text()}; leave --threshold out"
        raise JobSpecError(msg)
    if with_score and model.kind != "classifier":
        msg = f"--with-score needs a classifier, but {model.path} is {model.kind_text()}; leave --with-score out"
        raise JobSpecError(msg)
    if model.kind == "classifier":
        label, probs = model.outputs
        labels = tuple(model.class_labels or ())
        label_type = pa.string() if label.dtype is not None and label.dtype.kind in "OU" else pa.int64()
        if threshold is None:
            predicted = OutputColumn(prediction_col, label_type, label.name, "label")
        else:
            predicted = OutputColumn(prediction_col, label_type, probs.name, "threshold", 1, threshold, labels)
        per_class = [OutputColumn(f"prob_{lab}", pa.float32(), probs.name, "prob", i) for i, lab in enumerate(labels)]
        as_list = OutputColumn("probabilities", pa.list_(pa.float32()), probs.name, "probs")
        score = OutputColumn("score", pa.float32(), probs.name, "score", 1, threshold)
        defaults = [predicted, *(per_class if prob_format == "columns" else [as_list])]
        candidates = [predicted, *per_class, as_list, score]
        if with_score:
            defaults.append(score)
    elif model.kind == "regressor":
        defaults = candidates = [_tensor_column(model.outputs[0], prediction_col)]
    else:
        defaults = candidates = [_tensor_column(out, out.name) for out in model.outputs]
    if not rename:
        return defaults
    return _pick(model, candidates, rename)


def _pick(model: Model, candidates: list[OutputColumn], rename: Mapping[str, str]) -> list[OutputColumn]:
    by_name = {c.name: c for c in candidates}
    tensors = {o.name: o for o in model.outputs}
    picked = []
    for name, column in rename.items():
        if name in by_name:
            picked.append(dataclasses.replace(by_name[name], name=column))
        elif name in tensors:
            picked.append(_tensor_column(tensors[name], column))
        else:
            known = ", ".join([*by_name, *(t for t in tensors if t not in by_name)])
            msg = (
                f"--output {name}={column}: {name!r} is neither an output column nor a model output "
                f"(known: {known}); pick one of those"
            )
            raise JobSpecError(msg)
    return picked


def decode_outputs(
    columns: Sequence[OutputColumn], values: dict[str, np.ndarray], *, rows: int, mask: np.ndarray | None
) -> list[pa.Array]:
    """Turn the model's output arrays into Arrow columns; ``mask`` marks rows whose outputs are null."""
    for name, arr in values.items():
        if arr.ndim == 0 or arr.shape[0] != rows:
            msg = (
                f"model output {name!r} has shape {list(arr.shape)} for a batch of {rows} rows; "
                "every output must have the row count as its first dimension"
            )
            raise ModelError(msg)
    validity = None if mask is None else _bitmap(~mask)
    result: list[pa.Array] = []
    transposed: dict[str, np.ndarray] = {}
    for col in columns:
        arr = values[col.source]
        if col.role in ("threshold", "score"):
            result.append(_from_probabilities(col, arr, mask, validity))
        elif col.role == "prob":
            if col.source not in transposed:
                transposed[col.source] = np.ascontiguousarray(arr.T, dtype=np.float32)
            result.append(to_arrow(transposed[col.source][col.index], pa.float32(), mask, validity))
        elif col.role in ("probs", "list"):
            flat = np.ascontiguousarray(arr).reshape(rows, -1)
            width = flat.shape[1]
            value_type = col.type.value_type
            offsets = to_arrow(np.arange(0, (rows + 1) * width, width, dtype=np.int32), pa.int32())
            values_arr = to_arrow(flat.reshape(-1), value_type)
            arrow_mask = None if mask is None else pa.Array.from_buffers(pa.bool_(), rows, [None, _bitmap(mask)])
            result.append(pa.ListArray.from_arrays(offsets, values_arr, type=col.type, mask=arrow_mask))
        else:
            flat = arr.reshape(rows) if arr.ndim == 2 else arr
            result.append(to_arrow(flat, col.type, mask, validity))
    return result


def to_arrow(
    values: np.ndarray, arrow_type: pa.DataType, mask: np.ndarray | None = None, validity: pa.Buffer | None = None
) -> pa.Array:
    """``pa.array(values, arrow_type, mask=mask)``, the same array, built on the numpy buffer without a copy.

    Numbers of the column's own type skip ``pa.array``, which looks for pandas on each call and imports it
    on the first (a second or so where pandas is installed); others (strings, a cast) go through it.
    ``validity`` is ``mask``'s Arrow bitmap, when the caller made it already.
    """
    if values.dtype.kind not in "iuf" or values.ndim != 1 or pa.from_numpy_dtype(values.dtype) != arrow_type:
        return pa.array(values, arrow_type, mask=mask)
    if mask is not None and validity is None:
        validity = _bitmap(~mask)
    data = pa.py_buffer(np.ascontiguousarray(values))
    return pa.Array.from_buffers(arrow_type, len(values), [validity, data], null_count=-1 if mask is not None else 0)


def _bitmap(bits: np.ndarray) -> pa.Buffer:
    """A boolean array as an Arrow bitmap (least significant bit first)."""
    return pa.py_buffer(np.packbits(bits, bitorder="little"))


def _from_probabilities(
    col: OutputColumn, probs: np.ndarray, mask: np.ndarray | None, validity: pa.Buffer | None
) -> pa.Array:
    if col.threshold is None:  # score without a threshold: the winning class's probability
        return to_arrow(probs.max(axis=1), pa.float32(), mask, validity)
    positive = probs[:, col.index] >= col.threshold
    if col.role == "score":
        return to_arrow(np.where(positive, probs[:, 1], probs[:, 0]), pa.float32(), mask, validity)
    classes = np.array(col.classes, dtype=object if pa.types.is_string(col.type) else np.int64)
    return to_arrow(classes[positive.astype(np.intp)], col.type, mask, validity)


def _tensor_column(out: TensorInfo, name: str) -> OutputColumn:
    """A whole output tensor as one column: ``[N]`` and ``[N, 1]`` plain, ``[N, k]`` a list."""
    if out.dtype is None or out.shape is None or not 1 <= len(out.shape) <= 2:
        msg = (
            f"model output {out.describe()} is not a [rows] or [rows, k] tensor, so it cannot become a "
            "column; re-export the model with tensor outputs"
        )
        raise ModelError(msg)
    if len(out.shape) == 2 and out.shape[1] != 1:
        return OutputColumn(name, pa.list_(_arrow_type(out)), out.name, "list")
    return OutputColumn(name, _arrow_type(out), out.name, "value")


def _arrow_type(info: TensorInfo) -> pa.DataType:
    assert info.dtype is not None
    if info.dtype.kind in "OU":
        return pa.string()
    return pa.from_numpy_dtype(info.dtype)
