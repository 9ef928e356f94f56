"""Model inputs <- data columns: decided and checked against every file before the first row is scored.

For each model input, in order of precedence:

1. ``--input NAME=COL[,COL...]`` (``input_columns``) names its columns;
2. a single-input model with ``--features`` takes those columns;
3. otherwise the column named like the input;
4. otherwise, for a single-input model whose exporter stored its training
   columns (``metadata_props`` ``feature_names``), those columns by name;
5. otherwise, for a single-input model only, every numeric column that is not
   kept (``--keep``) and not a hive partition folder, in schema order. This is
   logged as a warning, recorded in the manifest, and checked against the
   output's earlier runs (and a job's earlier nights): a changed order stops the
   run, since scores from swapped columns look plausible and are wrong.

One list or fixed-size-list column can feed a ``[N, F]`` input (a vector
column, e.g. embeddings); otherwise each column gives one feature.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from batchscore.errors import JobSpecError, ModelError, NullValuesError, SchemaMismatchError
from batchscore.features import fill_problem, null_message
from batchscore.model import Model, TensorInfo
from batchscore.outputs import OutputColumn, output_columns
from batchscore.reader import InputFile
from batchscore.spec import JobSpec

log = logging.getLogger("batchscore")

Origin = Literal["--input", "--features", "name", "model", "auto"]
"""Where an input's columns came from, for error messages."""


@dataclass(frozen=True)
class InputBinding:
    """One model input and the columns that feed it."""

    info: TensorInfo
    columns: tuple[str, ...]
    vector: bool = False
    """One list column feeds the whole ``[N, F]`` input."""
    origin: Origin = "name"
    imputes: bool = False
    """The model imputes NaN in this input itself (an ``Imputer`` node reads it)."""

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def dtype(self) -> np.dtype[Any]:
        assert self.info.dtype is not None
        return self.info.dtype

    @property
    def rank(self) -> int:
        assert self.info.shape is not None
        return len(self.info.shape)

    @property
    def width(self) -> int | None:
        """F of a ``[N, F]`` input when the model declares it."""
        assert self.info.shape is not None
        dim = self.info.shape[1] if self.rank == 2 else None
        return dim if isinstance(dim, int) else None

    def fill(self, fill_value: float | None) -> object:
        """What a null becomes with ``on_null="fill"``: ``""`` for strings (an unseen category); the given value;
        or, when none is given, NaN for a float input the model imputes itself and 0 otherwise."""
        if self.dtype.kind == "O":
            return ""
        if fill_value is not None:
            return fill_value
        return math.nan if self.imputes and self.dtype.kind == "f" else 0.0

    def describe(self, file: InputFile) -> str:
        """``tensor(int64) [N, 1] <- age (int32)``, as ``inspect --data`` shows it under the input's name."""
        if len(self.columns) == 1:
            source = f"{self.columns[0]} ({file.field(self.columns[0]).type})"
        else:
            source = ", ".join(self.columns)
        imputes = ", nulls reach it as NaN with --on-null fill (the model imputes them)" if self.imputes else ""
        return f"{self.info.describe().removeprefix(self.name + ': ')} <- {source}{imputes}"


@dataclass(frozen=True)
class FeaturePlan:
    """Which columns feed which model input, which pass through, and what scoring adds."""

    inputs: tuple[InputBinding, ...]
    keep: tuple[str, ...]
    outputs: tuple[OutputColumn, ...]
    batch_dim: int | None = None
    """Rows per model call when the model fixes its batch dimension."""

    @property
    def features(self) -> tuple[str, ...]:
        """Every column feeding the model, each once, in input order."""
        return tuple(dict.fromkeys(c for b in self.inputs for c in b.columns))

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


def is_string(dtype: pa.DataType) -> bool:
    """Column types a string input may have: (large) strings, string views, dictionaries of strings."""
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    return bool(pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype))


def is_vector(dtype: pa.DataType) -> bool:
    """A list, large list or fixed-size list of numbers."""
    is_list = pa.types.is_list(dtype) or pa.types.is_large_list(dtype) or pa.types.is_fixed_size_list(dtype)
    return bool(is_list and is_numeric(dtype.value_type))


def plan_features(
    files: Sequence[InputFile], model: Model, spec: JobSpec, *, keep_features: bool = False
) -> FeaturePlan:
    """Map columns to the model and check every file; raise before the first row is scored.

    ``keep_features``: by default keep every column, the features too (the Python API adds columns to a frame).
    """
    first = files[0]
    for info in model.inputs:
        _check_model_input(info, model.path)
    bindings = _bind(first, model, spec)
    features = tuple(dict.fromkeys(c for b in bindings for c in b.columns))
    keep = spec.keep
    if keep is None:
        keep = tuple(c for c in first.columns if keep_features or c not in features)
    for file in files:
        _check_file(file, first, bindings, keep)
    for binding in bindings:
        _check_width(binding, first)

    outputs = tuple(
        output_columns(
            model,
            prediction_col=spec.prediction_col,
            prob_format=spec.prob_format,
            threshold=spec.threshold,
            with_score=spec.with_score,
            rename=spec.output_columns,
        )
    )
    clashes = [o.name for o in outputs if o.name in keep]
    if clashes:
        msg = (
            f"output column(s) {_quoted(clashes)} would overwrite input column(s) of the same name; "
            "pass --prediction-col NAME or --output NAME=COLUMN, or leave them out of --keep"
        )
        raise JobSpecError(msg)

    for binding in bindings:
        _check_nulls(binding, files, spec)
    return FeaturePlan(inputs=tuple(bindings), keep=tuple(keep), outputs=outputs, batch_dim=model.batch_dim)


def _bind(first: InputFile, model: Model, spec: JobSpec) -> list[InputBinding]:
    inputs = model.inputs
    names = [i.name for i in inputs]
    given = spec.input_map
    unknown = [n for n in given if n not in names]
    if unknown:
        msg = (
            f"--input names {_quoted(unknown)}, but model {model.path} has no such input "
            f"(its inputs: {_short_list(names)}); use the names `batchscore inspect` shows"
        )
        raise JobSpecError(msg)
    if spec.features is not None and len(inputs) > 1:
        msg = (
            f"--features feeds a single-input model, but {model.path} has {len(inputs)} inputs ({_short_list(names)}); "
            "map them with --input NAME=COLUMN[,COLUMN...] (inputs not named take the column of their own name)"
        )
        raise JobSpecError(msg)
    bindings: list[InputBinding] = []
    missing: list[str] = []
    for info in inputs:
        origin: Origin
        if info.name in given:
            columns, origin = given[info.name], "--input"
        elif spec.features is not None:
            columns, origin = spec.features, "--features"
        elif info.name in first.columns:
            columns, origin = (info.name,), "name"
        elif len(inputs) == 1 and model.feature_names is not None:
            columns, origin = model.feature_names, "model"
        elif len(inputs) == 1:
            excluded = set(spec.keep or ()) | set(first.partitions)
            numeric = (c for c in first.schema.names if c not in excluded and is_numeric(first.field(c).type))
            columns, origin = tuple(numeric), "auto"
            if not columns:
                msg = (
                    f"no numeric feature column found in {first.path} (columns: {_short_list(first.columns)}); "
                    "pass --features"
                )
                raise SchemaMismatchError(msg)
        else:
            missing.append(info.name)
            continue
        vector = len(columns) == 1 and columns[0] in first.columns and is_vector(first.field(columns[0]).type)
        imputes = info.name in model.imputed_inputs
        bindings.append(InputBinding(info, tuple(columns), vector=vector, origin=origin, imputes=imputes))
    if missing:
        msg = (
            f"model input(s) {_quoted(missing)} have no column of the same name in {first.path} "
            f"(it has: {_short_list(first.columns)}); pass --input NAME=COLUMN for each"
        )
        raise SchemaMismatchError(msg)
    return bindings


def _check_model_input(info: TensorInfo, path: str) -> None:
    if info.dtype is None or info.shape is None or info.dtype.kind not in "fiubO":
        msg = (
            f"model input {info.describe()} of {path} is not a tensor of numbers, bools or strings; "
            "re-export the model with tensor inputs"
        )
        raise ModelError(msg)
    if len(info.shape) not in (1, 2):
        msg = (
            f"model input {info.describe()} of {path} has {len(info.shape)} dimensions; batchscore feeds "
            "[rows] and [rows, features] inputs from table columns"
        )
        raise ModelError(msg)


def _check_file(file: InputFile, first: InputFile, bindings: Sequence[InputBinding], keep: Sequence[str]) -> None:
    available = file.columns
    for binding in bindings:
        missing = [c for c in binding.columns if c not in available]
        if missing:
            msg = (
                f"feature column(s) {_quoted(missing)} not found in {file.path} "
                f"(it has: {_short_list(available)}) for model input {binding.name!r}; fix the column list or the input"
            )
            raise SchemaMismatchError(msg)
        for col in binding.columns:
            _check_type(binding, col, file)
    missing = [c for c in keep if c not in available]
    if missing:
        msg = (
            f"keep column(s) {_quoted(missing)} not found in {file.path} "
            f"(it has: {_short_list(available)}); fix the column list or the input"
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


def _check_type(binding: InputBinding, col: str, file: InputFile) -> None:
    dtype = file.field(col).type
    where = f"column {col!r} in {file.path} is {dtype}, but model input {binding.info.describe()}"
    if binding.vector:
        if not is_vector(dtype):
            msg = f"{where} is fed from it as a list column; every input file must give {col!r} as a list of numbers"
            raise SchemaMismatchError(msg)
        if binding.dtype.kind == "O":
            msg = f"{where} wants strings; map a string column with --input {binding.name}=COLUMN"
            raise SchemaMismatchError(msg)
        size = dtype.list_size if pa.types.is_fixed_size_list(dtype) else None
        if size is not None and binding.width is not None and size != binding.width:
            msg = f"{where} wants {binding.width} values per row, but the column holds {size}; map a matching column"
            raise SchemaMismatchError(msg)
    elif binding.dtype.kind == "O":
        if not is_string(dtype):
            msg = (
                f"{where} wants strings; map a string column with --input {binding.name}=COLUMN, or cast the column "
                "to string before scoring"
            )
            raise SchemaMismatchError(msg)
    elif not is_numeric(dtype):
        fix = (
            "leave it out of --features or pass it through with --keep"
            if binding.origin in ("--features", "auto")
            else f"map a numeric column with --input {binding.name}=COLUMN"
        )
        msg = (
            f"column {col!r} in {file.path} is {dtype}, but the features of model input {binding.info.describe()} "
            f"must be numeric (int, float, bool or decimal); {fix}"
        )
        raise SchemaMismatchError(msg)


def _check_width(binding: InputBinding, first: InputFile) -> None:
    count = len(binding.columns)
    if binding.vector:
        if binding.rank != 2:
            msg = (
                f"list column {binding.columns[0]!r} in {first.path} can only feed a [rows, features] input, but model "
                f"input {binding.info.describe()} takes one value per row; map a plain column to it"
            )
            raise SchemaMismatchError(msg)
        return
    if binding.rank == 1 and count != 1:
        msg = (
            f"model input {binding.info.describe()} takes one value per row, but {count} columns "
            f"({_short_list(binding.columns)}) would feed it; map exactly one column with --input {binding.name}=COLUMN"
        )
        raise SchemaMismatchError(msg)
    want = binding.width
    if want is None or count == want:
        return
    listed = _short_list(binding.columns)
    where, fix = {
        "--features": ("the --features list has", "pass --features with exactly the model's columns in training order"),
        "--input": (f"--input {binding.name}= lists", f"list exactly {want} columns in --input {binding.name}=..."),
        "name": (
            f"the data has only the column {listed!r} of that name, so",
            f"pass --input {binding.name}=COLUMN,... with {want} columns, or a list column",
        ),
        "model": ("the model's stored feature_names list", "re-export the model with its true feature names"),
        "auto": ("the data has", _auto_fix(binding.columns, count - want)),
    }[binding.origin]
    msg = (
        f"model input {binding.name!r} wants {want} features, but {where} {count} "
        f"numeric feature columns ({listed}) in {first.path}; {fix}"
    )
    raise SchemaMismatchError(msg)


def _check_nulls(binding: InputBinding, files: Sequence[InputFile], spec: JobSpec) -> None:
    """What the footers' null counts already tell: nulls with on_null='error', a fill value that cannot fill.

    Only nulls known to be there fail here; where the counts are unknown (a LazyFrame, a file without statistics)
    the same errors come from the batch that holds the null, so every path behaves alike.
    """
    known = [(file, c, file.null_counts.get(c)) for file in files for c in binding.columns]
    present = [(file, c, n) for file, c, n in known if n]
    if spec.on_null == "error" and present:
        file, col, nulls = present[0]
        imputed_by = binding.name if binding.imputes else None
        raise NullValuesError(null_message(col, file.path, nulls or 0, imputed_by=imputed_by))
    if spec.on_null != "fill":
        return
    if present:
        problem = fill_problem(binding.fill(spec.fill_value), binding.dtype, input_desc=binding.info.describe())
        if problem:
            file, col, _ = present[0]
            raise JobSpecError(f"{problem} (column {col!r} has nulls in {file.path})")
    given = spec.fill_value
    if binding.imputes and given is not None and not math.isnan(given) and any(n != 0 for _, _, n in known):
        log.warning(
            "model input %r imputes missing values itself, but --fill-value %s replaces nulls before it sees them; "
            "leave --fill-value out (or pass nan) to score them as the model was trained",
            binding.name,
            given,
        )


def _short_list(names: Sequence[str], limit: int = 8) -> str:
    """The first few names and how many more: a 2,000-column table gives a line, not 14 KB."""
    shown = ", ".join(names[:limit])
    return shown + (f", ... {len(names) - limit} more" if len(names) > limit else "")


def _quoted(names: Sequence[str], limit: int = 8) -> str:
    return _short_list([repr(n) for n in names], limit)


def _auto_fix(columns: Sequence[str], extra: int) -> str:
    """The fix for a feature count found by taking every numeric column: name the id-like ones when they explain it."""
    ids = [c for c in columns if c.lower() == "id" or c.lower().endswith(("_id", "id_", "_key"))]
    if extra > 0 and len(ids) == extra:
        if len(ids) > 8:
            return f"{len(ids)} columns look like ids ({_quoted(ids)}): pass them with --keep, or --features"
        return f"{_quoted(ids)} look(s) like ids: pass --keep {','.join(ids)} (and any other passthrough columns)"
    return "pass --keep with the id and other non-feature numeric columns, or --features with the model's columns"
