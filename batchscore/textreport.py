"""``batchscore report`` on a terminal: the run's lineage, its summary and the drift table, as plain text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from batchscore.drift import DriftReport, Review
from batchscore.summary import CategoricalStats, NumericStats, Summary


def render(review: Review) -> str:
    """Lineage, then the drift table (worst first), then the features and the outputs."""
    current = review.current
    lines = [f"summary of {current.path}"]
    lineage = current.lineage
    for key in ("run_id", "model", "model_sha256", "provider", "rows_written", "finished_at"):
        if key in lineage:
            lines.append(f"  {key}: {lineage[key]}")
    step = current.summary.step
    sampled = f"1 row in {step} looked at beyond rows and nulls" if step > 1 else "every row looked at"
    lines.append(f"  rows summarized: {current.summary.rows:,} ({sampled})")
    coverage = current.coverage
    if coverage.get("missing_parts"):
        lines.append(f"  coverage: {coverage['parts']} of {coverage['parts_total']} part(s)")
    lines.append("")
    if review.drift is not None:
        lines += [review.drift.headline(), *drift_table(review.drift), ""]
    elif review.note:
        lines += [review.note, ""]
    lines += ["features:", *summary_table(current.summary, outputs=False), ""]
    lines += ["outputs:", *summary_table(current.summary, outputs=True)]
    return "\n".join(lines)


def drift_table(report: DriftReport) -> list[str]:
    """One line per column, worst first."""
    rows: list[Sequence[str]] = [("column", "role", "PSI", "reading", "null rate", "categories", "")]
    for c in report.columns:
        nulls = ""
        if c.null_rate is not None and c.reference_null_rate is not None:
            nulls = f"{c.reference_null_rate:.1%} -> {c.null_rate:.1%}"
        categories = "; ".join(
            part
            for part in (
                "new: " + ", ".join(c.new[:3]) if c.new else "",
                "vanished: " + ", ".join(c.vanished[:3]) if c.vanished else "",
            )
            if part
        )
        psi = "" if c.psi is None else f"{c.psi:.3f}"
        rows.append((c.column, c.role, psi, c.reading, nulls, categories, "DRIFT" if c.flagged else c.note))
    return _table(rows)


def summary_table(summary: Summary, *, outputs: bool) -> list[str]:
    """Features (or outputs) with their counts, null share and distribution."""
    columns = summary.outputs if outputs else summary.features
    rows: list[Sequence[str]] = [("column", "type", "rows", "nulls", "NaNs", "min", "p50", "max", "mean / top values")]
    for name, stats in columns.items():
        nulls = f"{stats.nulls / stats.rows:.1%}" if stats.rows else ""
        if isinstance(stats, NumericStats):
            median = stats.quantiles([0.5])
            rows.append(
                (
                    name,
                    stats.type,
                    f"{stats.rows:,}",
                    nulls,
                    f"{stats.nans:,}",
                    _num(stats.min),
                    _num(median[0] if median else None),
                    _num(stats.max),
                    _num(stats.mean),
                )
            )
        elif isinstance(stats, CategoricalStats):
            shares = stats.shares()
            top = (
                "more than 1000 distinct values"
                if shares is None
                else ", ".join(f"{k} {v:.1%}" for k, v in list(shares.items())[:5])
            )
            rows.append((name, stats.type, f"{stats.rows:,}", nulls, "", "", "", "", top))
        else:
            rows.append((name, stats.type, f"{stats.rows:,}", nulls, "", "", "", "", ""))
    return _table(rows)


def _num(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.4g}"


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
