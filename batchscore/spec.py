"""JobSpec: one frozen, validated description of a scoring run.

The command line and the Python API both build a :class:`JobSpec`; nothing else
configures a run, so the two cannot drift.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NoReturn, get_args

from batchscore.errors import JobSpecError

Device = Literal["auto", "cpu", "cuda"]
OnNull = Literal["error", "fill", "skip"]
ProbFormat = Literal["columns", "list"]
Mode = Literal["error", "overwrite", "resume"]
Compression = Literal["zstd", "snappy", "gzip", "lz4", "brotli", "none"]
OnDrift = Literal["warn", "fail"]
Format = Literal["parquet", "delta"]
SchemaMode = Literal["strict", "merge"]
EngineName = Literal["local", "processes", "ray"]

DEFAULT_BATCH_SIZE = 65536
MAX_BATCH_SIZE = 1 << 24
"""16,777,216 rows: far above what any stage gains from, and a bound that turns a typo into a usage error."""
DEFAULT_MAX_PSI = 0.25
"""PSI above this is a major shift in the usual reading (< 0.1 stable, 0.1-0.25 moderate)."""
DEFAULT_MAX_NULL_RATE_CHANGE = 0.1
"""A null rate moving by more than 10 points is drift."""


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """Everything a scoring run needs. Validated once, on construction."""

    inputs: tuple[str, ...]
    """Parquet files, directories (searched recursively) or glob patterns."""
    model: str
    """Path of the ONNX model."""
    out: str
    """Output directory; with ``format="delta"``, the Delta table's path."""
    features: tuple[str, ...] | None = None
    """Feature columns in the model's order; None: every numeric non-keep column."""
    keep: tuple[str, ...] | None = None
    """Passthrough columns; None: every column that is not a feature."""
    batch_size: int = DEFAULT_BATCH_SIZE
    device: Device = "auto"
    threads: int | None = None
    """onnxruntime intra-op threads; None: one per available core."""
    on_null: OnNull = "error"
    fill_value: float | None = None
    """Value for nulls with ``on_null="fill"``. None: NaN for float inputs the model imputes itself (an ONNX
    ``Imputer`` reads them, as skl2onnx writes a SimpleImputer), 0 for other numeric inputs; strings get ``""``."""
    prob_format: ProbFormat = "columns"
    prediction_col: str = "prediction"
    input_columns: Mapping[str, str | Sequence[str]] = field(default_factory=dict, hash=False)
    """Model input name -> the column(s) feeding it; an input not named takes the column of its own name."""
    output_columns: Mapping[str, str] = field(default_factory=dict, hash=False)
    """Output to keep -> its column name; empty: every default output column."""
    threshold: float | None = None
    """Binary classifiers: predict the positive (second) class when its probability >= threshold."""
    with_score: bool = False
    """Add a ``score`` column: the probability of the predicted class."""
    mode: Mode = "error"
    """If ``out`` holds output: fail, replace it, or resume (keep parts already scored for the same inputs)."""
    compression: Compression = "zstd"
    format: Format = "parquet"
    """``parquet``: a folder of parts and ``_SUCCESS``; ``delta``: one commit to a Delta Lake table."""
    schema_mode: SchemaMode = "strict"
    """Delta only: ``merge`` lets a run add columns the table lacks (schema evolution); ``strict`` refuses."""
    partition_by: tuple[str, ...] | None = None
    """Output columns to split the output by, as hive folders ``DIR/col=value/``."""
    filter: str | None = None
    """A SQL boolean expression over input columns; only matching rows are scored."""
    model_sha256: str | None = None
    """The approved model's sha256: any other model file is refused before a row is read."""
    report: str | None = None
    """Path of a JSON run report to write, if any."""
    engine: EngineName = "local"
    """Who runs the tasks: this process's threads, worker processes on this machine, or Ray actors."""
    workers: int | None = None
    """Worker processes or Ray actors; None: one per core (processes), per CPU or GPU of the cluster (ray)."""
    ray_address: str | None = None
    """The Ray cluster to connect to (``auto``, ``host:port``, ``ray://host:10001``); None: ``RAY_ADDRESS``, or a
    local cluster started for the run."""
    job: str | None = None
    """The job file this spec came from (lineage only)."""
    history: str | None = None
    """A glob of this job's earlier outputs (its output path with the date as ``*``), set by job files: an
    inferred feature order is checked against what they were scored with."""
    summary: bool = True
    """Write the run summary (``DIR/_batchscore_summary.json``): per-feature and per-output statistics."""
    reference: str | None = None
    """An earlier output folder or saved summary to compare this run's summary with; missing: a warning."""
    max_psi: float = DEFAULT_MAX_PSI
    """A column whose PSI against the reference exceeds this has drifted."""
    max_null_rate_change: float = DEFAULT_MAX_NULL_RATE_CHANGE
    """A column whose null rate moves by more than this (a share, 0.1 = 10 points) has drifted."""
    on_drift: OnDrift = "warn"
    """Drift over the limits: log a warning, or fail (exit 6) after committing the output."""
    storage_options: Mapping[str, str | int | float | bool] = field(default_factory=dict, hash=False, repr=False)
    """Object-store settings for every path of the run (pyarrow's names: endpoint_override, region, ...)."""

    def __post_init__(self) -> None:
        self._check_types()
        _check_choice("on_null", self.on_null, OnNull)
        _check_choice("prob_format", self.prob_format, ProbFormat)
        _check_choice("mode", self.mode, Mode)
        _check_choice("compression", self.compression, Compression)
        _check_choice("on_drift", self.on_drift, OnDrift)
        _check_choice("format", self.format, Format)
        _check_choice("schema_mode", self.schema_mode, SchemaMode)
        if self.schema_mode != "strict" and self.format != "delta":
            msg = f"schema_mode {self.schema_mode!r} applies to Delta tables only; pass --format delta or drop it"
            raise JobSpecError(msg)
        _check_choice("engine", self.engine, EngineName)
        if self.workers is not None and self.workers < 1:
            msg = f"workers must be at least 1, got {self.workers}; omit it for one per core"
            raise JobSpecError(msg)
        if self.workers is not None and self.engine == "local":
            msg = (
                f"workers = {self.workers} needs engine processes or ray (the local engine is one process); "
                "pass --engine processes, or leave --workers out"
            )
            raise JobSpecError(msg)
        if self.ray_address is not None and self.engine != "ray":
            msg = f"ray_address {self.ray_address!r} needs engine ray; pass --engine ray, or leave --ray-address out"
            raise JobSpecError(msg)
        if self.format == "delta" and self.engine != "local":
            msg = (
                f"format delta needs engine local: a Delta table's one commit streams every part through one "
                f"writer in this process; use --format parquet with --engine {self.engine}"
            )
            raise JobSpecError(msg)
        if not self.inputs:
            msg = "no input given: name at least one Parquet file, directory or glob"
            raise JobSpecError(msg)
        if not self.model:
            raise JobSpecError("no model given: pass --model PATH to an .onnx file")
        if not self.out:
            raise JobSpecError("no output directory given: pass --out DIR")
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            msg = (
                f"batch_size must be a positive number of rows up to {MAX_BATCH_SIZE:,}, got {self.batch_size:,}; "
                f"the default {DEFAULT_BATCH_SIZE:,} suits most models"
            )
            raise JobSpecError(msg)
        check_model_options(device=self.device, threads=self.threads)
        if not self.prediction_col:
            raise JobSpecError("prediction_col must not be empty")
        if self.model_sha256 is not None and not _SHA256.fullmatch(self.model_sha256):
            msg = (
                f"model sha256 pin must be 64 hex digits, got {self.model_sha256!r}; "
                "copy it from `batchscore inspect MODEL` or `sha256sum MODEL`"
            )
            raise JobSpecError(msg)
        if not self.max_psi > 0:
            msg = f"max_psi must be a positive number (0.25 flags a major shift), got {self.max_psi}"
            raise JobSpecError(msg)
        if not 0 < self.max_null_rate_change <= 1:
            msg = (
                "max_null_rate_change must be a share between 0 and 1 (0.1 = 10 points), "
                f"got {self.max_null_rate_change}"
            )
            raise JobSpecError(msg)
        if self.reference is not None and self.format == "delta":
            msg = (
                "drift checks (--reference) need the run summary, which Parquet output stores next to its parts; "
                "a Delta table has no place for it yet: drop --reference, or write --format parquet"
            )
            raise JobSpecError(msg)
        if self.reference is not None and not self.summary:
            msg = (
                "a drift reference needs this run's summary; drop --no-summary (output.summary = false) or --reference"
            )
            raise JobSpecError(msg)
        if self.filter is not None:
            from batchscore.rowfilter import RowFilter

            RowFilter(self.filter)
        for name in ("features", "keep", "partition_by"):
            cols = getattr(self, name)
            if cols is None:
                continue
            if (name == "features" and not cols) or any(not c for c in cols):
                msg = f"{name} has an empty column name: {','.join(cols)!r}; list names separated by commas"
                raise JobSpecError(msg)
            dupes = sorted({c for c in cols if cols.count(c) > 1})
            if dupes:
                msg = f"{name} names {', '.join(map(repr, dupes))} more than once; list each column once"
                raise JobSpecError(msg)
        if self.storage_options:
            from batchscore._objectstore import check_options

            object.__setattr__(self, "storage_options", check_options(self.storage_options))
        object.__setattr__(self, "input_columns", _column_map(self.input_columns))
        object.__setattr__(self, "output_columns", _output_map(self.output_columns))
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            msg = f"threshold must be a probability between 0 and 1, got {self.threshold}"
            raise JobSpecError(msg)
        if self.features is not None and self.input_columns:
            msg = "features and input_columns are both given; use --input NAME=COLUMN,... for every model input"
            raise JobSpecError(msg)
        if self.features is not None and self.keep is not None:
            both = [c for c in self.features if c in self.keep]
            if both:
                msg = (
                    f"column(s) {', '.join(map(repr, both))} are in both features and keep; "
                    "a column is either a model feature or a passthrough"
                )
                raise JobSpecError(msg)

    def _check_types(self) -> None:
        """Each field of the type it declares (paths may be ``os.PathLike``), or a JobSpecError naming it."""
        for name in ("inputs", "features", "keep", "partition_by"):
            value = getattr(self, name)
            if value is None and name != "inputs":
                continue
            if isinstance(value, str | os.PathLike):
                value = (value,)  # one path or column, as score() takes it
            if not isinstance(value, Sequence) or not all(isinstance(v, str | os.PathLike) for v in value):
                _wrong_type(name, value, "a list of strings")
            object.__setattr__(self, name, tuple(os.fspath(v) for v in value))
        for name in ("model", "out", "report", "job", "prediction_col", "filter", "model_sha256", "reference"):
            value = getattr(self, name)
            optional = name not in ("model", "out", "prediction_col")
            if value is None and optional:
                continue
            if not isinstance(value, str | os.PathLike) or (name not in _PATHS and not isinstance(value, str)):
                _wrong_type(name, value, "a string")
            object.__setattr__(self, name, os.fspath(value))
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool):
            _wrong_type("batch_size", self.batch_size, "an integer")
        for name in ("fill_value", "threshold", "max_psi", "max_null_rate_change"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, int | float) or isinstance(value, bool):
                _wrong_type(name, value, "a number")
            object.__setattr__(self, name, float(value))
        for name in ("with_score", "summary"):
            if not isinstance(getattr(self, name), bool):
                _wrong_type(name, getattr(self, name), "true or false")
        for name in ("input_columns", "output_columns"):
            if not isinstance(getattr(self, name), Mapping):
                _wrong_type(name, getattr(self, name), "a mapping of names")

    @property
    def input_map(self) -> dict[str, tuple[str, ...]]:
        """``input_columns`` with every value a tuple of column names."""
        return {name: (cols,) if isinstance(cols, str) else tuple(cols) for name, cols in self.input_columns.items()}

    def replace(self, **changes: object) -> JobSpec:
        """A copy with some fields changed, validated again."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


_SHA256 = re.compile(r"[0-9a-f]{64}", re.IGNORECASE)
_PATHS = frozenset({"model", "out", "report", "job", "reference"})


def _wrong_type(field: str, value: object, expected: str) -> NoReturn:
    hint = "; write it without quotes" if isinstance(value, str) and expected in ("an integer", "a number") else ""
    msg = f"{field} must be {expected}, got {type(value).__name__} {value!r}{hint}"
    raise JobSpecError(msg)


def check_model_options(*, device: object, threads: object) -> None:
    """What a :class:`~batchscore.model.Model` is loaded with: a known device, a positive thread count or None."""
    _check_choice("device", device, Device)
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool)):
        _wrong_type("threads", threads, "an integer")
    if threads is not None and threads < 1:
        msg = f"threads must be at least 1, got {threads}; omit it to use every core"
        raise JobSpecError(msg)


def _check_choice(field: str, value: object, choices: object) -> None:
    allowed = get_args(choices)
    if value not in allowed:
        msg = f"{field} must be one of {'|'.join(allowed)}, got {value!r}"
        raise JobSpecError(msg)


def split_columns(value: str | None) -> tuple[str, ...] | None:
    """Parse a comma-separated column list from the command line."""
    if value is None:
        return None
    return tuple(part.strip() for part in value.split(","))


def parse_assignments(values: Iterable[str] | None, *, flag: str) -> dict[str, str]:
    """Parse repeated ``NAME=VALUE`` command-line options into a dict, in order."""
    result: dict[str, str] = {}
    for raw in values or ():
        name, sep, value = (part.strip() for part in raw.partition("="))
        if not sep or not name or not value:
            msg = f"{flag} {raw!r} is not NAME=VALUE; write e.g. {flag} age=age_years"
            raise JobSpecError(msg)
        if name in result:
            msg = f"{flag} names {name!r} twice; give each name once"
            raise JobSpecError(msg)
        result[name] = value
    return result


def _column_map(mapping: Mapping[str, str | Sequence[str]]) -> dict[str, tuple[str, ...]]:
    result: dict[str, tuple[str, ...]] = {}
    for name, cols in mapping.items():
        columns = (cols,) if isinstance(cols, str) else tuple(cols)
        if not name or not columns or any(not isinstance(c, str) or not c for c in columns):
            msg = (
                f"input_columns[{name!r}] = {cols!r} is not a list of column names; use --input NAME=COLUMN[,COLUMN...]"
            )
            raise JobSpecError(msg)
        result[name] = columns
    return result


def _output_map(mapping: Mapping[str, str]) -> dict[str, str]:
    result = dict(mapping)
    if any(not isinstance(v, str) or not k or not v for k, v in result.items()):
        msg = f"output_columns {result!r} must map output names to column names; use --output NAME=COLUMN"
        raise JobSpecError(msg)
    names = list(result.values())
    dupes = sorted({c for c in names if names.count(c) > 1})
    if dupes:
        msg = (
            f"output_columns names column(s) {', '.join(map(repr, dupes))} more than once; "
            "give each output its own name"
        )
        raise JobSpecError(msg)
    return result
