"""The run summary: what was scored, per feature and per output, gathered batch by batch as the rows stream by.

::

    numeric feature          rows, nulls, NaNs, min, max, mean: exact
                             quantiles: a KLL sketch (Apache DataSketches) of the non-null, non-NaN values,
                             fed a strided sample of at most ``SAMPLE_ROWS`` rows of each batch
    string, bool feature     rows, nulls and the exact count of every value, up to ``MAX_CATEGORIES``
                             distinct values (beyond that the column is high-cardinality: values not counted)
    prediction (classifier)  the class counts, as for a string feature
    probability, regression  as a numeric feature
    list column (vectors)    rows and nulls

Summaries merge (batches into a part, parts into a run, workers into a driver): counts add, extremes
combine, KLL sketches merge with the same guarantees. :meth:`Summary.to_dict` / :meth:`Summary.from_dict`
(and ``to_bytes`` / ``from_bytes``, JSON) carry everything, sketches as base64 of their binary form, so a
summary travels between processes and is compared with another later without rereading any data
(:mod:`batchscore.drift`).

Sampling: a KLL update costs about 40 ns a value, against about 0.3 ns a value for the exact statistics,
so the sketch gets every ``ceil(rows / SAMPLE_ROWS)``-th row of a batch. Its quantiles are then those of a
sample (for 5M rows in 65536-row batches, 78k values a column: rank error under 0.5%), on top of
KLL's own (1.33% at ``SKETCH_K`` 200, 99% confidence).
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasketches import kll_doubles_sketch

from batchscore.errors import InputDataError

if TYPE_CHECKING:
    from batchscore.mapping import FeaturePlan
    from batchscore.reader import InputFile

log = logging.getLogger("batchscore")

SUMMARY_VERSION = 1
SUMMARY = "_batchscore_summary.json"
"""The merged summary of an output folder, next to its parts."""
SUMMARY_PARTS = "_batchscore_summary_parts.json"
"""Each part's own summary, so that a resumed run merges the parts it keeps with those it scores."""
SKETCH_K = 200
"""KLL accuracy parameter: about 1.33% normalized rank error (99% confidence), about 5 KB a column."""
SAMPLE_ROWS = 1024
"""At most this many rows of each batch go into the quantile sketches (every n-th row)."""
MAX_CATEGORIES = 1000
"""Distinct values counted exactly per string column; a column with more is marked high-cardinality."""
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
"""The quantiles :meth:`NumericStats.describe` shows."""
TOP_VALUES = 10
"""Values :meth:`CategoricalStats.describe` shows, the rest summed as 'other'."""

Kind = Literal["numeric", "categorical", "other"]


@dataclass
class NumericStats:
    """A numeric column: exact counts and extremes, a quantile sketch of a per-batch sample."""

    kind: ClassVar[Kind] = "numeric"
    type: str
    rows: int = 0
    nulls: int = 0
    nans: int = 0
    total: float = 0.0
    """Sum of the values (not null, not NaN): the mean is ``total / count``."""
    min: float | None = None
    max: float | None = None
    sketch: kll_doubles_sketch = field(default_factory=lambda: kll_doubles_sketch(SKETCH_K))

    @property
    def count(self) -> int:
        """Values that are neither null nor NaN."""
        return self.rows - self.nulls - self.nans

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    @property
    def missing_rate(self) -> float | None:
        """Share of rows that are null or NaN."""
        return (self.nulls + self.nans) / self.rows if self.rows else None

    def quantiles(self, ranks: Sequence[float]) -> list[float] | None:
        """Quantiles read from the sketch; None when there is no value."""
        if self.sketch.is_empty():
            return None
        return [float(q) for q in self.sketch.get_quantiles(list(ranks))]

    def update(self, array: pa.Array, *, step: int) -> None:
        rows = len(array)
        self.rows += rows
        nulls = array.null_count
        self.nulls += nulls
        if nulls == rows:
            return
        if pa.types.is_decimal(array.type) or pa.types.is_float16(array.type):
            array = array.cast(pa.float64())
        values = array.drop_null() if nulls else array
        x = values.to_numpy(zero_copy_only=False)
        lo, hi = x.min(), x.max()
        if x.dtype.kind == "f" and (math.isnan(lo) or math.isnan(hi)):  # min and max propagate NaN: rare path
            x = x[~np.isnan(x)]
            self.nans += len(values) - len(x)
            if not len(x):
                return
            lo, hi = x.min(), x.max()
        self.total += float(x.sum(dtype=np.float64))
        self.min = float(lo) if self.min is None else min(self.min, float(lo))
        self.max = float(hi) if self.max is None else max(self.max, float(hi))
        sample = x[step // 2 :: step] if step > 1 else x
        self.sketch.update(np.array(sample, dtype=np.float64))  # a copy: the binding takes no strided or read-only view

    def merge(self, other: NumericStats) -> None:
        self.rows += other.rows
        self.nulls += other.nulls
        self.nans += other.nans
        self.total += other.total
        self.min = _combine(min, self.min, other.min)
        self.max = _combine(max, self.max, other.max)
        self.sketch.merge(other.sketch)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "type": self.type,
            "rows": self.rows,
            "nulls": self.nulls,
            "nans": self.nans,
            "total": _number(self.total),
            "min": _number(self.min),
            "max": _number(self.max),
            "sketch": base64.b64encode(self.sketch.serialize()).decode("ascii"),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NumericStats:
        return cls(
            type=str(data["type"]),
            rows=int(data["rows"]),
            nulls=int(data["nulls"]),
            nans=int(data["nans"]),
            total=float(data["total"]),
            min=None if data["min"] is None else float(data["min"]),
            max=None if data["max"] is None else float(data["max"]),
            sketch=kll_doubles_sketch.deserialize(base64.b64decode(data["sketch"])),
        )

    def describe(self) -> dict[str, Any]:
        """What a person reads: counts, extremes, mean and a few quantiles (no sketch bytes)."""
        quantiles = self.quantiles(QUANTILES)
        return {
            "kind": self.kind,
            "type": self.type,
            "rows": self.rows,
            "nulls": self.nulls,
            "nans": self.nans,
            "min": _number(self.min),
            "max": _number(self.max),
            "mean": _number(self.mean),
            "quantiles": None
            if quantiles is None
            else {f"p{round(q * 100)}": v for q, v in zip(QUANTILES, quantiles, strict=True)},
        }


@dataclass
class CategoricalStats:
    """A string, bool or class-label column: exact value counts, up to ``MAX_CATEGORIES`` distinct values."""

    kind: ClassVar[Kind] = "categorical"
    type: str
    rows: int = 0
    nulls: int = 0
    counts: dict[str, int] | None = field(default_factory=dict)
    """Count of each value; None once the column had more than ``MAX_CATEGORIES`` distinct values."""

    @property
    def missing_rate(self) -> float | None:
        return self.nulls / self.rows if self.rows else None

    def shares(self) -> dict[str, float] | None:
        """Each value's share of the non-null rows, largest first; None for a high-cardinality column."""
        if self.counts is None:
            return None
        total = sum(self.counts.values())
        ordered = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return {k: v / total for k, v in ordered} if total else {}

    def update(self, array: pa.Array, *, step: int) -> None:
        rows = len(array)
        self.rows += rows
        nulls = array.null_count
        self.nulls += nulls
        if self.counts is None or nulls == rows:
            return
        if pa.types.is_dictionary(array.type):
            indices = array.indices.drop_null() if nulls else array.indices
            tally = np.bincount(indices.to_numpy(zero_copy_only=False), minlength=len(array.dictionary))
            values, counts = array.dictionary.to_pylist(), tally.tolist()
        else:
            found = pc.value_counts(array)
            if len(found) > MAX_CATEGORIES:
                self.counts = None
                return
            values, counts = found.field("values").to_pylist(), found.field("counts").to_pylist()
        for value, count in zip(values, counts, strict=True):
            if value is not None and count:
                key = _label(value)
                self.counts[key] = self.counts.get(key, 0) + count
        if len(self.counts) > MAX_CATEGORIES:
            self.counts = None

    def merge(self, other: CategoricalStats) -> None:
        self.rows += other.rows
        self.nulls += other.nulls
        if self.counts is None or other.counts is None:
            self.counts = None
            return
        for key, count in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + count
        if len(self.counts) > MAX_CATEGORIES:
            self.counts = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "type": self.type, "rows": self.rows, "nulls": self.nulls, "counts": self.counts}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CategoricalStats:
        counts = data["counts"]
        return cls(
            type=str(data["type"]),
            rows=int(data["rows"]),
            nulls=int(data["nulls"]),
            counts=None if counts is None else {str(k): int(v) for k, v in counts.items()},
        )

    def describe(self) -> dict[str, Any]:
        shares = self.shares()
        top = None if shares is None else dict(list(shares.items())[:TOP_VALUES])
        return {
            "kind": self.kind,
            "type": self.type,
            "rows": self.rows,
            "nulls": self.nulls,
            "distinct": None if self.counts is None else len(self.counts),
            "top": top,
            "other": None if shares is None or top is None else max(0.0, 1.0 - sum(top.values())),
            "high_cardinality": self.counts is None,
        }


@dataclass
class OtherStats:
    """A column summarized by its counts only (list and vector columns)."""

    kind: ClassVar[Kind] = "other"
    type: str
    rows: int = 0
    nulls: int = 0

    @property
    def missing_rate(self) -> float | None:
        return self.nulls / self.rows if self.rows else None

    def update(self, array: pa.Array, *, step: int) -> None:
        self.rows += len(array)
        self.nulls += array.null_count

    def merge(self, other: OtherStats) -> None:
        self.rows += other.rows
        self.nulls += other.nulls

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "type": self.type, "rows": self.rows, "nulls": self.nulls}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OtherStats:
        return cls(type=str(data["type"]), rows=int(data["rows"]), nulls=int(data["nulls"]))

    def describe(self) -> dict[str, Any]:
        return self.to_dict()


ColumnStats = NumericStats | CategoricalStats | OtherStats
_CLASSES: dict[str, type[NumericStats] | type[CategoricalStats] | type[OtherStats]] = {
    "numeric": NumericStats,
    "categorical": CategoricalStats,
    "other": OtherStats,
}


def kind_of(dtype: pa.DataType) -> Kind:
    """How a column of this type is summarized."""
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    if pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        return "numeric"
    if (
        pa.types.is_boolean(dtype)
        or pa.types.is_string(dtype)
        or pa.types.is_large_string(dtype)
        or pa.types.is_string_view(dtype)
    ):
        return "categorical"
    return "other"


class Summary:
    """Per-feature and per-output statistics of the rows scored; see the module docstring."""

    def __init__(
        self,
        features: Mapping[str, ColumnStats],
        outputs: Mapping[str, ColumnStats],
        *,
        sample_rows: int | None = SAMPLE_ROWS,
    ) -> None:
        self.features: dict[str, ColumnStats] = dict(features)
        self.outputs: dict[str, ColumnStats] = dict(outputs)
        self.sample_rows = sample_rows
        """Rows of each batch fed to the sketches; None: every row."""
        self.rows = 0

    @classmethod
    def create(
        cls,
        features: Mapping[str, pa.DataType],
        outputs: Mapping[str, tuple[pa.DataType, Kind]],
        *,
        sample_rows: int | None = SAMPLE_ROWS,
    ) -> Summary:
        """An empty summary: ``features`` name -> type; ``outputs`` name -> (type, how to summarize it)."""
        return cls(
            {name: _CLASSES[kind_of(dtype)](type=str(dtype)) for name, dtype in features.items()},
            {name: _CLASSES[kind](type=str(dtype)) for name, (dtype, kind) in outputs.items()},
            sample_rows=sample_rows,
        )

    def empty(self) -> Summary:
        """A summary of no rows with the same columns."""
        return Summary(
            {name: _CLASSES[s.kind](type=s.type) for name, s in self.features.items()},
            {name: _CLASSES[s.kind](type=s.type) for name, s in self.outputs.items()},
            sample_rows=self.sample_rows,
        )

    def update(self, batch: pa.RecordBatch, outputs: Sequence[pa.Array]) -> None:
        """Add a batch: its feature columns (by name) and the output columns (in ``self.outputs`` order)."""
        rows = batch.num_rows
        self.rows += rows
        step = max(1, math.ceil(rows / self.sample_rows)) if self.sample_rows else 1
        for name, stats in self.features.items():
            stats.update(batch.column(name), step=step)  # type: ignore[arg-type]
        for stats, array in zip(self.outputs.values(), outputs, strict=True):
            stats.update(array, step=step)

    def merge(self, other: Summary) -> Summary:
        """Add ``other`` (the same columns) into this summary; returns self."""
        for mine, theirs in ((self.features, other.features), (self.outputs, other.outputs)):
            for name, stats in theirs.items():
                if name in mine and mine[name].kind == stats.kind:
                    mine[name].merge(stats)  # type: ignore[arg-type]
                else:
                    mine[name] = _CLASSES[stats.kind].from_dict(stats.to_dict())  # type: ignore[attr-defined]
        self.rows += other.rows
        return self

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready, sketches included."""
        return {
            "summary_version": SUMMARY_VERSION,
            "rows": self.rows,
            "sketch_k": SKETCH_K,
            "sample_rows": self.sample_rows,
            "features": {name: stats.to_dict() for name, stats in self.features.items()},
            "outputs": {name: stats.to_dict() for name, stats in self.outputs.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "summary") -> Summary:
        try:
            if data.get("summary_version") != SUMMARY_VERSION:
                raise ValueError(f"summary_version {data.get('summary_version')!r}, expected {SUMMARY_VERSION}")
            summary = cls(
                {n: _CLASSES[d["kind"]].from_dict(d) for n, d in data["features"].items()},
                {n: _CLASSES[d["kind"]].from_dict(d) for n, d in data["outputs"].items()},
                sample_rows=data.get("sample_rows"),
            )
            summary.rows = int(data["rows"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            msg = (
                f"{source} is not a batchscore summary ({type(exc).__name__}: {exc}); "
                f"point at an output folder or its {SUMMARY}"
            )
            raise InputDataError(msg) from exc
        return summary

    def to_bytes(self) -> bytes:
        """JSON bytes: what a worker sends its driver."""
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, blob: bytes) -> Summary:
        return cls.from_dict(json.loads(blob))

    def describe(self) -> dict[str, Any]:
        """A readable summary (counts, extremes, quantiles, top values), without the sketches."""
        return {
            "rows": self.rows,
            "sample_rows": self.sample_rows,
            "features": {name: stats.describe() for name, stats in self.features.items()},
            "outputs": {name: stats.describe() for name, stats in self.outputs.items()},
        }


def merge_all(summaries: Iterable[Summary]) -> Summary | None:
    """One summary of all of them (merged into a copy of the first); None if there is none."""
    merged: Summary | None = None
    for one in summaries:
        merged = Summary.from_dict(one.to_dict()) if merged is None else merged.merge(one)
    return merged


def _label(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _combine(pick: Any, a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return float(pick(a, b))


def _number(value: float | None) -> float | str | None:
    """JSON has no infinities: write them as strings, which float() reads back."""
    if value is None or math.isfinite(value):
        return value
    return str(value)


def plan_summary(plan: FeaturePlan, file: InputFile, *, sample_rows: int | None = SAMPLE_ROWS) -> Summary:
    """An empty summary of the plan's feature columns (typed as in ``file``) and of its output columns."""
    outputs: dict[str, tuple[pa.DataType, Kind]] = {
        o.name: (o.type, "categorical" if o.role in ("label", "threshold") else kind_of(o.type)) for o in plan.outputs
    }
    return Summary.create({f: file.field(f).type for f in plan.features}, outputs, sample_rows=sample_rows)


@dataclass
class SavedSummary:
    """A summary read from an output folder (or a saved summary file) with what the run wrote next to it."""

    path: str
    summary: Summary
    lineage: dict[str, Any]
    coverage: dict[str, Any]
    drift: dict[str, Any] | None


def summary_file(summary: Summary, *, lineage: Mapping[str, Any], coverage: Mapping[str, Any], drift: Any) -> bytes:
    """The :data:`SUMMARY` content: the merged summary, readable statistics, lineage, coverage and drift."""
    data = {
        **summary.to_dict(),
        "lineage": dict(lineage),
        "coverage": dict(coverage),
        "drift": drift,
        "described": summary.describe(),
    }
    return (json.dumps(data, indent=1) + "\n").encode()


def find(path: str) -> str | None:
    """The summary file for ``path``: an output folder's :data:`SUMMARY`, or ``path`` itself if it is a file."""
    if os.path.isdir(path):
        candidate = os.path.join(path, SUMMARY)
        return candidate if os.path.isfile(candidate) else None
    return path if os.path.isfile(path) else None


def load(path: str) -> SavedSummary:
    """Read the summary of an output folder or a saved summary file."""
    found = find(path)
    if found is None:
        what = "holds no " + SUMMARY if os.path.isdir(path) else "does not exist"
        msg = (
            f"{path} {what}; point at a batchscore output folder (written by a run without --no-summary) "
            f"or at a saved {SUMMARY}"
        )
        raise InputDataError(msg)
    try:
        with open(found, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        msg = f"cannot read summary {found}: {exc}; re-run the scoring job to write it again"
        raise InputDataError(msg) from exc
    if not isinstance(data, dict):
        msg = f"{found} is not a batchscore summary; point at an output folder or its {SUMMARY}"
        raise InputDataError(msg)
    return SavedSummary(
        path=found,
        summary=Summary.from_dict(data, source=found),
        lineage=dict(data.get("lineage") or {}),
        coverage=dict(data.get("coverage") or {}),
        drift=data.get("drift"),
    )
