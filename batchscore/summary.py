"""The run summary: what was scored, per feature and per output, gathered batch by batch as the rows stream by.

::

    every column             rows and nulls: exact
    numeric feature          NaNs, min, max, mean, and a KLL quantile sketch (Apache DataSketches)
    string, bool feature     the count of every value, up to ``MAX_CATEGORIES`` distinct values (beyond
                             that the column is high-cardinality: values not counted)
    prediction (classifier)  the class counts, as for a string feature
    probability, regression  as a numeric feature
    list column (vectors)    rows and nulls only

Summaries merge (batches into a part, parts into a run, workers into a driver): counts add, extremes
combine, KLL sketches merge with the same guarantees. :meth:`Summary.to_dict` / :meth:`Summary.from_dict`
(and ``to_bytes`` / ``from_bytes``, JSON) carry everything, sketches as base64 of their binary form, so a
summary travels between processes and is compared with another later without rereading any data
(:mod:`batchscore.drift`).

A sample, beyond rows and nulls. The summary must cost at most 5% of a light model's run. Rows and nulls
come free from Arrow's metadata, but looking at every value of a batch that has left the CPU cache costs
about 2 ns a value, a KLL update about 40 ns, and counting strings about 15 ns: on the logreg benchmark (32
float features) that was 10-20% of the run. So every ``step``-th row is looked at, a systematic sample
across batches and files, with ``step`` fixed for a run so that about ``SAMPLE_VALUES`` rows are looked at
(:func:`sample_step`; ``step`` 1, every row, up to that many rows). NaN counts, sums and category counts are
scaled by ``step``; min and max are the sample's. KLL's rank error (1.33% at ``SKETCH_K`` 200, 99%
confidence) then adds to the sample's (about 0.4% at 16384 rows, whatever the run's size).
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import numpy as np
import pyarrow as pa
from datasketches import kll_doubles_sketch

from batchscore import storage
from batchscore.errors import InputDataError
from batchscore.features import plain_values
from batchscore.outputs import to_arrow
from batchscore.storage import Location

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
SAMPLE_VALUES = 16384
"""Rows a run looks at beyond rows and nulls, whatever its size (see :func:`sample_step`)."""
MAX_CATEGORIES = 1000
"""Distinct values counted per string column; a column with more is marked high-cardinality."""
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
"""The quantiles :meth:`NumericStats.describe` shows."""
TOP_VALUES = 10
"""Values :meth:`CategoricalStats.describe` shows, the rest summed as 'other'."""

Kind = Literal["numeric", "categorical", "other"]
_T = TypeVar("_T")


def sample_step(rows: int, *, values: int | None = SAMPLE_VALUES) -> int:
    """Look at every ``step``-th row so that a run of ``rows`` rows looks at about ``values`` of them.

    A run's step depends only on its inputs' total rows, so parts scored by different attempts (resume)
    or workers of the same inputs share it, and their sketches merge without weights.
    """
    return 1 if values is None or rows <= values else math.ceil(rows / values)


@dataclass(frozen=True)
class Sample:
    """The rows of one batch that are looked at: ``start``, ``start + step``, ... below the batch's rows."""

    rows: int
    start: int
    step: int

    @property
    def size(self) -> int:
        return 0 if self.start >= self.rows else (self.rows - 1 - self.start) // self.step + 1

    def take(self, array: pa.Array) -> pa.Array:
        """The sampled rows of a column."""
        if self.step == 1 and self.start == 0:
            return array
        if self.step == 1:
            return array.slice(self.start)
        return array.take(to_arrow(np.arange(self.start, self.rows, self.step, dtype=np.int64), pa.int64()))

    def values(self, array: pa.Array) -> np.ndarray:
        """The sampled, non-null values of a numeric column as float64 (a fresh, contiguous array)."""
        plain = pa.types.is_integer(array.type) or (
            pa.types.is_floating(array.type) and not pa.types.is_float16(array.type)
        )
        view = plain_values(array) if plain and not array.null_count else None
        if view is not None:  # the common case: a strided view of the buffer, only the sampled rows are read
            return np.array(view[self.start :: self.step], dtype=np.float64)
        taken = self.take(array)
        if not plain:
            taken = taken.cast(pa.float64())
        if taken.null_count:
            taken = taken.drop_null()
        values = plain_values(taken)  # no pandas: to_numpy(zero_copy_only=False) imports it on first use
        return np.array(values if values is not None else taken.to_numpy(zero_copy_only=False), dtype=np.float64)


@dataclass
class NumericStats:
    """A numeric column: exact rows and nulls; NaNs, extremes, mean and quantiles from the sampled rows."""

    kind: ClassVar[Kind] = "numeric"
    type: str
    rows: int = 0
    nulls: int = 0
    seen: int = 0
    """Non-null values looked at, times the step: an estimate of ``rows - nulls`` (exact at step 1)."""
    nans: int = 0
    """NaNs looked at, times the step (exact at step 1)."""
    total: float = 0.0
    """Sum of the values looked at (not NaN), times the step."""
    min: float | None = None
    max: float | None = None
    sketch: kll_doubles_sketch = field(default_factory=lambda: kll_doubles_sketch(SKETCH_K))
    sampled: bool = False
    """True when some rows were not looked at (step > 1)."""

    @property
    def mean(self) -> float | None:
        counted = self.seen - self.nans
        return self.total / counted if counted > 0 else None

    @property
    def missing_rate(self) -> float | None:
        """Share of rows that are null or NaN (NaNs estimated from the sample)."""
        if not self.rows:
            return None
        nan_rate = self.nans / self.seen if self.seen else 0.0
        return (self.nulls + nan_rate * (self.rows - self.nulls)) / self.rows

    def quantiles(self, ranks: Sequence[float]) -> list[float] | None:
        """Quantiles read from the sketch; None when there is no value."""
        if self.sketch.is_empty():
            return None
        return [float(q) for q in self.sketch.get_quantiles(list(ranks))]

    def update(self, array: pa.Array, sample: Sample) -> None:
        rows = len(array)
        self.rows += rows
        self.nulls += array.null_count
        self.sampled = self.sampled or sample.step > 1
        if array.null_count == rows or not sample.size:
            return
        values = sample.values(array)
        if not len(values):  # every sampled row was null
            return
        self.seen += len(values) * sample.step
        total = float(values.sum())
        if math.isnan(total):  # NaN among the values (or inf - inf): the rare path
            nan = np.isnan(values)
            self.nans += int(nan.sum()) * sample.step
            values = values[~nan]
            if not len(values):
                return
            total = float(values.sum())
        self.total += total * sample.step
        lo, hi = float(values.min()), float(values.max())
        self.min = lo if self.min is None else min(self.min, lo)
        self.max = hi if self.max is None else max(self.max, hi)
        self.sketch.update(values)

    def merge(self, other: NumericStats) -> None:
        self.rows += other.rows
        self.nulls += other.nulls
        self.seen += other.seen
        self.nans += other.nans
        self.total += other.total
        self.min = _combine(min, self.min, other.min)
        self.max = _combine(max, self.max, other.max)
        self.sketch.merge(other.sketch)
        self.sampled = self.sampled or other.sampled

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "type": self.type,
            "rows": self.rows,
            "nulls": self.nulls,
            "seen": self.seen,
            "nans": self.nans,
            "total": _number(self.total),
            "min": _number(self.min),
            "max": _number(self.max),
            "sampled": self.sampled,
            "sketch": base64.b64encode(self.sketch.serialize()).decode("ascii"),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NumericStats:
        return cls(
            type=str(data["type"]),
            rows=int(data["rows"]),
            nulls=int(data["nulls"]),
            seen=int(data["seen"]),
            nans=int(data["nans"]),
            total=float(data["total"]),
            min=None if data["min"] is None else float(data["min"]),
            max=None if data["max"] is None else float(data["max"]),
            sampled=bool(data["sampled"]),
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
            "sampled": self.sampled,
            "quantiles": None
            if quantiles is None
            else {f"p{round(q * 100)}": v for q, v in zip(QUANTILES, quantiles, strict=True)},
        }


@dataclass
class CategoricalStats:
    """A string, bool or class-label column: exact rows and nulls, value counts from the sampled rows."""

    kind: ClassVar[Kind] = "categorical"
    type: str
    rows: int = 0
    nulls: int = 0
    counts: dict[str, int] | None = field(default_factory=dict)
    """Each value's count among the rows looked at, times the step; None once the column had more than
    ``MAX_CATEGORIES`` distinct values."""
    sampled: bool = False

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

    def update(self, array: pa.Array, sample: Sample) -> None:
        rows = len(array)
        self.rows += rows
        self.nulls += array.null_count
        self.sampled = self.sampled or sample.step > 1
        if self.counts is None or array.null_count == rows or not sample.size:
            return
        labels = plain_values(array) if pa.types.is_integer(array.type) and not array.null_count else None
        if labels is not None:  # a classifier's integer prediction: the sampled rows of a view, no Arrow take
            found = _counts(labels[sample.start :: sample.step])
        else:
            taken = sample.take(array)
            if pa.types.is_dictionary(taken.type):
                taken = taken.dictionary_decode()
            found = _value_counts(taken)
        if len(found[0]) > MAX_CATEGORIES:
            self.counts = None
            return
        for value, count in zip(*found, strict=True):
            if value is not None:
                key = _label(value)
                self.counts[key] = self.counts.get(key, 0) + count * sample.step
        if len(self.counts) > MAX_CATEGORIES:
            self.counts = None

    def merge(self, other: CategoricalStats) -> None:
        self.rows += other.rows
        self.nulls += other.nulls
        self.sampled = self.sampled or other.sampled
        if self.counts is None or other.counts is None:
            self.counts = None
            return
        for key, count in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + count
        if len(self.counts) > MAX_CATEGORIES:
            self.counts = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "type": self.type,
            "rows": self.rows,
            "nulls": self.nulls,
            "sampled": self.sampled,
            "counts": self.counts,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CategoricalStats:
        counts = data["counts"]
        return cls(
            type=str(data["type"]),
            rows=int(data["rows"]),
            nulls=int(data["nulls"]),
            sampled=bool(data["sampled"]),
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
            "sampled": self.sampled,
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

    def update(self, array: pa.Array, sample: Sample) -> None:
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

    def __init__(self, features: Mapping[str, ColumnStats], outputs: Mapping[str, ColumnStats], *, step: int = 1):
        self.features: dict[str, ColumnStats] = dict(features)
        self.outputs: dict[str, ColumnStats] = dict(outputs)
        self.step = step
        """Every ``step``-th row is looked at (:func:`sample_step`)."""
        self.rows = 0
        self._next = step // 2
        """Where the next sampled row is, counted from the start of the next batch."""

    @classmethod
    def create(
        cls, features: Mapping[str, pa.DataType], outputs: Mapping[str, tuple[pa.DataType, Kind]], *, step: int = 1
    ) -> Summary:
        """An empty summary: ``features`` name -> type; ``outputs`` name -> (type, how to summarize it)."""
        return cls(
            {name: _CLASSES[kind_of(dtype)](type=str(dtype)) for name, dtype in features.items()},
            {name: _CLASSES[kind](type=str(dtype)) for name, (dtype, kind) in outputs.items()},
            step=step,
        )

    def empty(self) -> Summary:
        """A summary of no rows with the same columns and step."""
        return Summary(
            {name: _CLASSES[s.kind](type=s.type) for name, s in self.features.items()},
            {name: _CLASSES[s.kind](type=s.type) for name, s in self.outputs.items()},
            step=self.step,
        )

    def update(self, batch: pa.RecordBatch, outputs: Sequence[pa.Array]) -> None:
        """Add a batch: its feature columns (by name) and the output columns (in ``self.outputs`` order)."""
        rows = batch.num_rows
        sample = Sample(rows, self._next, self.step)
        self._next = sample.start + sample.size * self.step - rows
        self.rows += rows
        for name, stats in self.features.items():
            stats.update(batch.column(name), sample)  # type: ignore[arg-type]
        for stats, array in zip(self.outputs.values(), outputs, strict=True):
            stats.update(array, sample)

    def merge(self, other: Summary) -> Summary:
        """Add ``other`` (the same columns) into this summary; returns self."""
        for mine, theirs in ((self.features, other.features), (self.outputs, other.outputs)):
            for name, stats in theirs.items():
                if name in mine and mine[name].kind == stats.kind:
                    mine[name].merge(stats)  # type: ignore[arg-type]
                else:
                    mine[name] = _CLASSES[stats.kind].from_dict(stats.to_dict())
        self.rows += other.rows
        return self

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready, sketches included."""
        return {
            "summary_version": SUMMARY_VERSION,
            "rows": self.rows,
            "step": self.step,
            "sketch_k": SKETCH_K,
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
                step=int(data["step"]),
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
            "step": self.step,
            "features": {name: stats.describe() for name, stats in self.features.items()},
            "outputs": {name: stats.describe() for name, stats in self.outputs.items()},
        }


def merge_all(summaries: Iterable[Summary]) -> Summary | None:
    """One summary of all of them (merged into a copy of the first); None if there is none."""
    merged: Summary | None = None
    for one in summaries:
        merged = Summary.from_dict(one.to_dict()) if merged is None else merged.merge(one)
    return merged


def _value_counts(array: pa.Array) -> tuple[list[Any], list[int]]:
    """Each distinct value (None for nulls) and its count, in order of first appearance, as
    ``pyarrow.compute.value_counts`` gives them; integer labels (a classifier's prediction) are
    counted with numpy, so that a run needs pyarrow.compute (0.06 s of import) only for strings."""
    values = plain_values(array) if pa.types.is_integer(array.type) and not array.null_count else None
    if values is not None:
        return _counts(values)
    import pyarrow.compute as pc

    found = pc.value_counts(array)
    return found.field("values").to_pylist(), found.field("counts").to_pylist()


def _counts(values: np.ndarray) -> tuple[list[Any], list[int]]:
    """Each distinct value of an integer array and its count, in order of first appearance."""
    distinct, first, counts = np.unique(values, return_index=True, return_counts=True)
    order = np.argsort(first, kind="stable")
    return distinct[order].tolist(), counts[order].tolist()


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


def plan_summary(plan: FeaturePlan, file: InputFile, *, step: int = 1) -> Summary:
    """An empty summary of the plan's feature columns (typed as in ``file``) and of its output columns."""
    outputs: dict[str, tuple[pa.DataType, Kind]] = {
        o.name: (o.type, "categorical" if o.role in ("label", "threshold") else kind_of(o.type)) for o in plan.outputs
    }
    return Summary.create({f: file.field(f).type for f in plan.features}, outputs, step=step)


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


def find(path: str, *, options: Mapping[str, Any] | None = None) -> str | None:
    """The summary file for ``path``: an output folder's :data:`SUMMARY`, or ``path`` itself if it is a file.

    ``path`` is a local path or a URI (``s3://bucket/out``); ``options`` configure the store
    (``--storage-option``). A store that cannot be asked is an :class:`InputDataError`.
    """
    found = _locate(path, options)
    return None if found is None else found[0]


def load(path: str, *, options: Mapping[str, Any] | None = None) -> SavedSummary:
    """Read the summary of an output folder or a saved summary file, on local disk or an object store."""
    found = _locate(path, options)
    if found is None:
        what = "holds no " + SUMMARY if _ask(path, options, Location.is_dir) else "does not exist"
        msg = (
            f"{path} {what}; point at a batchscore output folder (written by a run without --no-summary) "
            f"or at a saved {SUMMARY}"
        )
        raise InputDataError(msg)
    name, where = found
    try:
        data = json.loads(where.read_bytes())
    except ValueError as exc:
        msg = f"cannot read summary {name}: {exc}; re-run the scoring job to write it again"
        raise InputDataError(msg) from exc
    except OSError as exc:
        msg = f"cannot read summary {name}: {storage.describe_os_error(exc)}; re-run the scoring job to write it again"
        raise InputDataError(msg) from exc
    if not isinstance(data, dict):
        msg = f"{name} is not a batchscore summary; point at an output folder or its {SUMMARY}"
        raise InputDataError(msg)
    return SavedSummary(
        path=name,
        summary=Summary.from_dict(data, source=name),
        lineage=dict(data.get("lineage") or {}),
        coverage=dict(data.get("coverage") or {}),
        drift=data.get("drift"),
    )


def exists(path: str, *, options: Mapping[str, Any] | None = None) -> bool:
    """A file or a folder is at ``path`` (a local path or a URI)."""
    return _ask(path, options, Location.exists)


def child_name(folder: str, name: str) -> str:
    """How a file in ``folder`` is named to users: joined to the folder as it was given (with ``/`` in a URI)."""
    return f"{folder.rstrip('/')}/{name}" if storage.is_uri(folder) else os.path.join(folder, name)


def _locate(path: str, options: Mapping[str, Any] | None) -> tuple[str, Location] | None:
    """The summary file for ``path`` as (its name, its location), or None; see :func:`find`."""

    def look(where: Location) -> tuple[str, Location] | None:
        if where.is_dir():
            candidate = where.child(SUMMARY)
            return (child_name(path, SUMMARY), candidate) if candidate.is_file() else None
        return (path, where) if where.is_file() else None

    return _ask(path, options, look)


def _ask(path: str, options: Mapping[str, Any] | None, question: Callable[[Location], _T]) -> _T:
    """Ask the store about ``path``; an error reaching it is one line naming the path and what to check."""
    try:
        return question(storage.resolve(path, options))
    except OSError as exc:
        reason = storage.describe_os_error(exc)  # a store's error names what to check; a disk's may not
        hint = "" if "; check" in reason else "; check the path and the storage options (--storage-option)"
        msg = f"cannot look for a summary at {path}: {reason}{hint}"
        raise InputDataError(msg) from exc
