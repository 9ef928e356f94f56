"""Drift: this run's summary against a reference's, summary to summary, without rereading either's data.

Per column present in both:

- numeric (features, probabilities, regression values): PSI over the reference's deciles. The nine
  cut points are the reference sketch's 10%..90% quantiles (repeated ones merged, so a column of few
  values gets fewer bins); each side's share of each bin is read from its own sketch.
- string and bool features, class predictions: PSI over the categories seen on either side, plus the
  categories that are new and those that vanished, and (predictions) each class's share change.
- every column: the change in the null rate (null or NaN, as a share of rows), in points.

``PSI = sum((cur - ref) * ln(cur / ref))`` over the bins, with empty bins counted as a share of
``EPSILON``. The usual reading: below 0.1 stable, 0.1 to 0.25 moderate, above 0.25 major. A column is
over the limits when its PSI exceeds ``max_psi`` or its null rate moves by more than
``max_null_rate_change``. Columns found on one side only are listed, never counted as drift.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from batchscore.errors import DriftError
from batchscore.spec import DEFAULT_MAX_NULL_RATE_CHANGE, DEFAULT_MAX_PSI, OnDrift
from batchscore.storage import is_uri
from batchscore.summary import CategoricalStats, ColumnStats, NumericStats, SavedSummary, Summary, exists, find, load

log = logging.getLogger("batchscore")

EPSILON = 1e-4
"""Share given to an empty bin, so that a bin empty on one side counts as a large change, not an infinite one."""
DECILES = tuple(i / 10 for i in range(1, 10))


@dataclass(frozen=True)
class ColumnDrift:
    """One column compared with the reference."""

    column: str
    role: Literal["feature", "output"]
    kind: str
    psi: float | None = None
    null_rate: float | None = None
    reference_null_rate: float | None = None
    new: tuple[str, ...] = ()
    """Categories found in this run and not in the reference."""
    vanished: tuple[str, ...] = ()
    """Categories of the reference not found in this run."""
    share_change: dict[str, float] = field(default_factory=dict)
    """Predictions: each class's share in this run minus its share in the reference."""
    note: str = ""
    reasons: tuple[str, ...] = ()
    """Why the column is over the limits; empty when it is not."""

    @property
    def flagged(self) -> bool:
        return bool(self.reasons)

    @property
    def null_rate_change(self) -> float | None:
        if self.null_rate is None or self.reference_null_rate is None:
            return None
        return self.null_rate - self.reference_null_rate

    @property
    def reading(self) -> str:
        """The usual reading of the PSI: stable, moderate or major."""
        if self.psi is None:
            return ""
        return "stable" if self.psi < 0.1 else "moderate" if self.psi <= 0.25 else "major"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["new"], data["vanished"], data["reasons"] = list(self.new), list(self.vanished), list(self.reasons)
        return {**data, "null_rate_change": self.null_rate_change, "reading": self.reading, "flagged": self.flagged}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnDrift:
        return cls(
            column=data["column"],
            role=data["role"],
            kind=data["kind"],
            psi=data.get("psi"),
            null_rate=data.get("null_rate"),
            reference_null_rate=data.get("reference_null_rate"),
            new=tuple(data.get("new", ())),
            vanished=tuple(data.get("vanished", ())),
            share_change=dict(data.get("share_change", {})),
            note=data.get("note", ""),
            reasons=tuple(data.get("reasons", ())),
        )


@dataclass(frozen=True)
class DriftReport:
    """Every column compared, worst first, against one reference and one set of limits."""

    reference: str
    max_psi: float
    max_null_rate_change: float
    columns: tuple[ColumnDrift, ...]

    @property
    def flagged(self) -> list[ColumnDrift]:
        return [c for c in self.columns if c.flagged]

    def headline(self) -> str:
        """One line: how many columns are over the limits, and the worst of them."""
        flagged = self.flagged
        if not flagged:
            worst = next((c for c in self.columns if c.psi is not None), None)
            most = f"; largest PSI {worst.psi:.3f} ({worst.column})" if worst and worst.psi is not None else ""
            return (
                f"no drift against {self.reference}: all {len(self.columns)} column(s) within the limits "
                f"(PSI <= {self.max_psi:g}, null rate change <= {self.max_null_rate_change:g}){most}"
            )
        limits = f"PSI > {self.max_psi:g} or null rate change > {self.max_null_rate_change:g}"
        named = ", ".join(f"{c.column} ({'; '.join(c.reasons)})" for c in flagged[:5])
        more = f" and {len(flagged) - 5} more" if len(flagged) > 5 else ""
        return f"drift against {self.reference}: {len(flagged)} column(s) over the limits ({limits}): {named}{more}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "max_psi": self.max_psi,
            "max_null_rate_change": self.max_null_rate_change,
            "flagged": [c.column for c in self.flagged],
            "columns": [c.to_dict() for c in self.columns],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftReport:
        return cls(
            reference=data["reference"],
            max_psi=float(data["max_psi"]),
            max_null_rate_change=float(data["max_null_rate_change"]),
            columns=tuple(ColumnDrift.from_dict(c) for c in data["columns"]),
        )


def psi(reference: Sequence[float], current: Sequence[float]) -> float:
    """Population stability index of two share vectors over the same bins (empty bins count as EPSILON)."""
    total = 0.0
    for ref, cur in zip(reference, current, strict=True):
        r, c = max(ref, EPSILON), max(cur, EPSILON)
        total += (c - r) * math.log(c / r)
    return total


def decile_edges(stats: NumericStats) -> list[float]:
    """The reference's decile cut points, repeated ones merged; empty when it has no value."""
    quantiles = stats.quantiles(DECILES)
    return sorted(set(quantiles)) if quantiles else []


def bin_shares(stats: NumericStats, edges: Sequence[float]) -> list[float]:
    """Share of the values in each bin ``(-inf, e0], (e0, e1], ..., (e_last, inf)``."""
    cdf = [float(v) for v in stats.sketch.get_cdf(list(edges), True)]
    return [b - a for a, b in zip([0.0, *cdf[:-1]], cdf, strict=True)]


def compare(
    current: Summary,
    reference: Summary,
    *,
    reference_path: str,
    max_psi: float = DEFAULT_MAX_PSI,
    max_null_rate_change: float = DEFAULT_MAX_NULL_RATE_CHANGE,
) -> DriftReport:
    """Compare two summaries column by column; the columns over the limits first, then by PSI."""
    columns: list[ColumnDrift] = []
    for role, mine, theirs in (
        ("feature", current.features, reference.features),
        ("output", current.outputs, reference.outputs),
    ):
        for name, stats in mine.items():
            ref = theirs.get(name)
            if ref is None:
                columns.append(ColumnDrift(name, role, stats.kind, note="not in the reference"))  # type: ignore[arg-type]
                continue
            columns.append(_column(name, role, stats, ref, max_psi, max_null_rate_change))  # type: ignore[arg-type]
        for name, ref in theirs.items():
            if name not in mine:
                columns.append(ColumnDrift(name, role, ref.kind, note="in the reference only"))  # type: ignore[arg-type]

    def badness(c: ColumnDrift) -> tuple[bool, float]:
        change = abs(c.null_rate_change or 0.0) / max_null_rate_change
        return (not c.flagged, -max((c.psi or 0.0) / max_psi, change))

    columns.sort(key=badness)
    return DriftReport(reference_path, max_psi, max_null_rate_change, tuple(columns))


def _column(
    name: str,
    role: Literal["feature", "output"],
    cur: ColumnStats,
    ref: ColumnStats,
    max_psi: float,
    max_null_rate_change: float,
) -> ColumnDrift:
    value: float | None = None
    new: tuple[str, ...] = ()
    vanished: tuple[str, ...] = ()
    share_change: dict[str, float] = {}
    note = ""
    if cur.kind != ref.kind:
        note = f"{ref.kind} in the reference, {cur.kind} now"
    elif isinstance(cur, NumericStats) and isinstance(ref, NumericStats):
        edges = decile_edges(ref)
        if edges and not cur.sketch.is_empty():
            value = psi(bin_shares(ref, edges), bin_shares(cur, edges))
        elif edges:
            note = "no value in this run"
    elif isinstance(cur, CategoricalStats) and isinstance(ref, CategoricalStats):
        cur_shares, ref_shares = cur.shares(), ref.shares()
        if cur_shares is None or ref_shares is None:
            note = "high cardinality: categories not compared"
        else:
            keys = sorted(set(cur_shares) | set(ref_shares))
            if cur_shares and ref_shares:
                value = psi([ref_shares.get(k, 0.0) for k in keys], [cur_shares.get(k, 0.0) for k in keys])
            new = tuple(k for k in cur_shares if k not in ref_shares)
            vanished = tuple(k for k in ref_shares if k not in cur_shares)
            if role == "output":
                share_change = {k: cur_shares.get(k, 0.0) - ref_shares.get(k, 0.0) for k in keys}
    reasons = []
    if value is not None and value > max_psi:
        reasons.append(f"PSI {value:.2f}")
    rate, ref_rate = cur.missing_rate, ref.missing_rate
    if rate is not None and ref_rate is not None and abs(rate - ref_rate) > max_null_rate_change:
        reasons.append(f"null rate {ref_rate:.0%} -> {rate:.0%}")
    if new and reasons:
        reasons.append("new: " + ", ".join(map(repr, new[:3])))
    if vanished and reasons:
        reasons.append("vanished: " + ", ".join(map(repr, vanished[:3])))
    return ColumnDrift(
        name,
        role,
        cur.kind,
        psi=value,
        null_rate=rate,
        reference_null_rate=ref_rate,
        new=new,
        vanished=vanished,
        share_change=share_change,
        note=note,
        reasons=tuple(reasons),
    )


def load_reference(path: str, *, options: Mapping[str, Any] | None = None) -> SavedSummary | None:
    """The reference's summary, or None with a warning when there is none yet (the first night).

    ``path`` is a local path or a URI; ``options`` configure its store (the run's ``storage_options``).
    """
    if find(path, options=options) is None:
        what = "does not exist" if not exists(path, options=options) else "holds no summary"
        log.warning("reference %s %s (the first run?): drift is not checked this time", path, what)
        return None
    return load(path, options=options)


def enforce(report: DriftReport, *, on_drift: OnDrift, output: str) -> None:
    """Log the outcome; with ``on_drift="fail"`` and a column over the limits, raise :class:`DriftError`."""
    if not report.flagged:
        log.info("%s", report.headline())
        return
    if on_drift == "warn":
        log.warning("%s", report.headline())
        return
    remote = any(is_uri(p) and not p.startswith("file://") for p in (output, report.reference))
    flags = " and the run's --storage-option flags" if remote else ""
    msg = (
        f"{report.headline()}; the scores and summary are committed in {output}. Look with "
        f"`batchscore report {output} --reference {report.reference}`{flags}, then accept the run "
        "(run again with --mode resume --on-drift warn: nothing is rescored) or fix the input and rescore"
    )
    raise DriftError(msg)


@dataclass(frozen=True)
class Review:
    """What ``batchscore report`` shows: an output's summary, its reference's, and the drift between them."""

    current: SavedSummary
    reference: SavedSummary | None
    drift: DriftReport | None
    note: str = ""
    """Why there is no drift table, when there is none."""


def review(
    path: str,
    *,
    reference: str | None = None,
    max_psi: float | None = None,
    max_null_rate_change: float | None = None,
    options: Mapping[str, Any] | None = None,
) -> Review:
    """Read ``path``'s summary and compare it with ``reference``, or with the reference its run was checked against.

    Without ``reference``, the run's own drift check is shown, with the reference's distributions if that
    reference is still there. Limits default to those of the run's check. Paths may be URIs; ``options``
    configure their stores (``--storage-option``).
    """
    if options:
        from batchscore._objectstore import check_options  # a bad option is a usage error, as for a run

        options = check_options(options)
    current = load(path, options=options)
    recorded = DriftReport.from_dict(current.drift) if current.drift else None
    limits = {
        "max_psi": max_psi if max_psi is not None else recorded.max_psi if recorded else DEFAULT_MAX_PSI,
        "max_null_rate_change": max_null_rate_change
        if max_null_rate_change is not None
        else recorded.max_null_rate_change
        if recorded
        else DEFAULT_MAX_NULL_RATE_CHANGE,
    }
    if reference is not None:
        ref = load(reference, options=options)
        return Review(current, ref, compare(current.summary, ref.summary, reference_path=reference, **limits))
    if recorded is None:
        return Review(current, None, None, note="no reference: pass --reference PATH to compare with another output")
    if find(recorded.reference, options=options) is None:
        note = f"reference {recorded.reference} is gone: the drift table is the run's own, without its distributions"
        return Review(current, None, recorded, note=note)
    ref = load(recorded.reference, options=options)
    return Review(current, ref, compare(current.summary, ref.summary, reference_path=recorded.reference, **limits))
