"""JobSpec: one frozen, validated description of a scoring run.

The command line and the Python API both build a :class:`JobSpec`; nothing else
configures a run, so the two cannot drift.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Literal, get_args

from batchscore.errors import JobSpecError

Device = Literal["auto", "cpu", "cuda"]
OnNull = Literal["error", "fill", "skip"]
ProbFormat = Literal["columns", "list"]
Mode = Literal["error", "overwrite", "resume"]
Compression = Literal["zstd", "snappy", "gzip", "lz4", "brotli", "none"]

DEFAULT_BATCH_SIZE = 65536


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """Everything a scoring run needs. Validated once, on construction."""

    inputs: tuple[str, ...]
    """Parquet files, directories (searched recursively) or glob patterns."""
    model: str
    """Path of the ONNX model."""
    out: str
    """Output directory."""
    features: tuple[str, ...] | None = None
    """Feature columns in the model's order; None: every numeric non-keep column."""
    keep: tuple[str, ...] | None = None
    """Passthrough columns; None: every column that is not a feature."""
    batch_size: int = DEFAULT_BATCH_SIZE
    device: Device = "auto"
    threads: int | None = None
    """onnxruntime intra-op threads; None: one per available core."""
    on_null: OnNull = "error"
    fill_value: float = 0.0
    prob_format: ProbFormat = "columns"
    prediction_col: str = "prediction"
    mode: Mode = "error"
    """If ``out`` holds output: fail, replace it, or resume (keep parts already scored for the same inputs)."""
    compression: Compression = "zstd"
    partition_by: tuple[str, ...] | None = None
    """Output columns to split the output by, as hive folders ``DIR/col=value/``."""
    filter: str | None = None
    """A SQL boolean expression over input columns; only matching rows are scored."""
    model_sha256: str | None = None
    """The approved model's sha256: any other model file is refused before a row is read."""
    report: str | None = None
    """Path of a JSON run report to write, if any."""
    job: str | None = None
    """The job file this spec came from (lineage only)."""

    def __post_init__(self) -> None:
        _check_choice("device", self.device, Device)
        _check_choice("on_null", self.on_null, OnNull)
        _check_choice("prob_format", self.prob_format, ProbFormat)
        _check_choice("mode", self.mode, Mode)
        _check_choice("compression", self.compression, Compression)
        if not self.inputs:
            msg = "no input given: name at least one Parquet file, directory or glob"
            raise JobSpecError(msg)
        if not self.model:
            raise JobSpecError("no model given: pass --model PATH to an .onnx file")
        if not self.out:
            raise JobSpecError("no output directory given: pass --out DIR")
        if self.batch_size < 1:
            msg = f"batch_size must be a positive number of rows, got {self.batch_size}"
            raise JobSpecError(msg)
        if self.threads is not None and self.threads < 1:
            msg = f"threads must be at least 1, got {self.threads}; omit it to use every core"
            raise JobSpecError(msg)
        if not self.prediction_col:
            raise JobSpecError("prediction_col must not be empty")
        if self.model_sha256 is not None and not _SHA256.fullmatch(self.model_sha256):
            msg = (
                f"model sha256 pin must be 64 hex digits, got {self.model_sha256!r}; "
                "copy it from `batchscore inspect MODEL` or `sha256sum MODEL`"
            )
            raise JobSpecError(msg)
        if self.filter is not None:
            from batchscore.rowfilter import RowFilter

            RowFilter(self.filter)
        for name in ("features", "keep", "partition_by"):
            cols = getattr(self, name)
            if cols is None:
                continue
            if not cols or any(not c for c in cols):
                msg = f"{name} has an empty column name: {','.join(cols)!r}; list names separated by commas"
                raise JobSpecError(msg)
            dupes = sorted({c for c in cols if cols.count(c) > 1})
            if dupes:
                msg = f"{name} names {', '.join(map(repr, dupes))} more than once; list each column once"
                raise JobSpecError(msg)
        if self.features is not None and self.keep is not None:
            both = [c for c in self.features if c in self.keep]
            if both:
                msg = (
                    f"column(s) {', '.join(map(repr, both))} are in both features and keep; "
                    "a column is either a model feature or a passthrough"
                )
                raise JobSpecError(msg)

    def replace(self, **changes: object) -> JobSpec:
        """A copy with some fields changed, validated again."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


_SHA256 = re.compile(r"[0-9a-f]{64}", re.IGNORECASE)


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
