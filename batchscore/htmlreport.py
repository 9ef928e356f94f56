"""``batchscore report --html``: one self-contained HTML page (inline SVG, inline CSS, no script, no network).

Sections: the run's lineage; the drift table, worst first; the predictions (class shares, probability or
value distributions); one card per feature with the reference's and this run's distributions overlaid,
its PSI and null-rate change. Distributions are read from the summaries' sketches and drawn by
matplotlib (``pip install 'batchscore[report]'``), imported only here.
"""

from __future__ import annotations

import html
import io
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from batchscore import storage
from batchscore.drift import ColumnDrift, Review
from batchscore.errors import JobSpecError, OutputError
from batchscore.summary import CategoricalStats, ColumnStats, NumericStats

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CURRENT = "#1f6feb"
REFERENCE = "#8c959f"
BINS = 30
TOP = 8

_CSS = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1f2328; margin: 24px auto;
       max-width: 1180px; padding: 0 16px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 19px; margin: 28px 0 8px; border-bottom: 1px solid #d0d7de; }
h3 { font-size: 15px; margin: 0 0 2px; } .muted { color: #59636e; }
table { border-collapse: collapse; font-size: 13px; } td, th { padding: 3px 10px; text-align: left; }
th { background: #f6f8fa; } tr:nth-child(even) td { background: #fafbfc; }
table.lineage td:first-child { color: #59636e; } code { font-size: 12px; }
.flag td { background: #ffebe9 !important; } .moderate { color: #9a6700; } .major { color: #cf222e; font-weight: 600; }
.stable { color: #1a7f37; }
.headline { padding: 8px 12px; border-radius: 6px; background: #dafbe1; } .headline.drift { background: #ffebe9; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 12px; }
.card { border: 1px solid #d0d7de; border-radius: 6px; padding: 10px 12px; } .card.flag { border-color: #cf222e; }
.card svg { width: 100%; height: auto; } .legend span { margin-right: 14px; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 4px; border-radius: 2px; }
"""


def write(path: str, review: Review, *, options: Mapping[str, Any] | None = None) -> None:
    """Write the report page for ``review`` to ``path``, a local path or a URI (``options`` configure its store)."""
    page = render(review)
    try:
        storage.resolve(path, options).write_bytes(page.encode("utf-8"))
    except OSError as exc:
        msg = f"cannot write {path}: {exc.strerror or storage.describe_os_error(exc)}; check the path and permissions"
        raise OutputError(msg) from exc


def render(review: Review) -> str:
    """The whole page as a string."""
    _matplotlib()
    current = review.current
    drifts: dict[tuple[str, str], ColumnDrift] = (
        {(c.role, c.column): c for c in review.drift.columns} if review.drift else {}
    )
    ref_summary = review.reference.summary if review.reference else None
    title = f"batchscore report: {current.lineage.get('output', current.path)}"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        "<h1>batchscore run report</h1>",
        f'<div class="muted">{_e(current.path)}</div>',
        "<h2>Lineage</h2>",
        _lineage(review),
        "<h2>Drift</h2>",
        _drift(review),
        "<h2>Predictions</h2>",
        _legend(review),
        _cards(current.summary.outputs, ref_summary.outputs if ref_summary else {}, drifts, "output"),
        "<h2>Features</h2>",
        _legend(review),
        _cards(current.summary.features, ref_summary.features if ref_summary else {}, drifts, "feature"),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        msg = "--html draws with matplotlib, which is not installed: pip install 'batchscore[report]'"
        raise JobSpecError(msg) from None


def _e(value: object) -> str:
    return html.escape(str(value))


def _lineage(review: Review) -> str:
    lineage, summary, coverage = review.current.lineage, review.current.summary, review.current.coverage
    rows: list[tuple[str, object]] = [
        ("output", lineage.get("output", "")),
        ("run id", lineage.get("run_id", "")),
        ("model", lineage.get("model", "")),
        ("model sha256", lineage.get("model_sha256", "")),
        ("provider", lineage.get("provider", "")),
        ("rows", f"{summary.rows:,}"),
        ("finished", lineage.get("finished_at", "")),
        ("batchscore", lineage.get("batchscore_version", "")),
        (
            "sampling",
            "every row" if summary.step == 1 else f"1 row in {summary.step} (rows and nulls: every row)",
        ),
    ]
    if coverage.get("missing_parts"):
        rows.append(("coverage", f"{coverage['parts']} of {coverage['parts_total']} parts"))
    if review.reference is not None:
        ref = review.reference.lineage
        rows.append(
            (
                "reference",
                f"{review.reference.path} (run {ref.get('run_id', '?')}, {review.reference.summary.rows:,} rows)",
            )
        )
    body = "".join(f"<tr><td>{_e(k)}</td><td><code>{_e(v)}</code></td></tr>" for k, v in rows)
    return f'<table class="lineage">{body}</table>'


def _drift(review: Review) -> str:
    report = review.drift
    if report is None:
        return f'<p class="muted">{_e(review.note or "no reference")}</p>'
    headline = f'<p class="headline{" drift" if report.flagged else ""}">{_e(report.headline())}</p>'
    head = "".join(f"<th>{h}</th>" for h in ("column", "role", "PSI", "reading", "null rate", "categories", ""))
    rows = []
    for c in report.columns:
        nulls = ""
        if c.null_rate is not None and c.reference_null_rate is not None:
            nulls = f"{c.reference_null_rate:.1%} &rarr; {c.null_rate:.1%}"
        cats = "; ".join(
            p
            for p in (
                "new: " + ", ".join(c.new[:4]) if c.new else "",
                "vanished: " + ", ".join(c.vanished[:4]) if c.vanished else "",
            )
            if p
        )
        psi = "" if c.psi is None else f"{c.psi:.3f}"
        rows.append(
            f'<tr class="{"flag" if c.flagged else ""}">'
            f'<td><a href="#{_anchor(c.role, c.column)}">{_e(c.column)}</a></td>'
            f'<td>{c.role}</td><td>{psi}</td><td class="{c.reading}">{c.reading}</td><td>{nulls}</td>'
            f"<td>{_e(cats)}</td><td>{_e('; '.join(c.reasons) or c.note)}</td></tr>"
        )
    return headline + f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _legend(review: Review) -> str:
    current = f'<span><i class="swatch" style="background:{CURRENT}"></i>this run</span>'
    if review.reference is None:
        return f'<p class="legend muted">{current}</p>'
    reference = f'<span><i class="swatch" style="background:{REFERENCE}"></i>reference</span>'
    return f'<p class="legend muted">{current}{reference}</p>'


def _anchor(role: str, column: str) -> str:
    return f"{role}-" + "".join(ch if ch.isalnum() else "_" for ch in column)


def _cards(
    columns: Mapping[str, ColumnStats],
    references: Mapping[str, ColumnStats],
    drifts: Mapping[tuple[str, str], ColumnDrift],
    role: str,
) -> str:
    ordered = sorted(
        columns,
        key=lambda n: (not (drifts.get((role, n)) and drifts[(role, n)].flagged), -(_psi(drifts.get((role, n))))),
    )
    cards = []
    for name in ordered:
        stats, ref, drift = columns[name], references.get(name), drifts.get((role, name))
        facts = [stats.type, f"{stats.rows:,} rows"]
        if stats.rows:
            facts.append(f"nulls {stats.nulls / stats.rows:.1%}")
        if drift is not None and drift.psi is not None:
            facts.append(f'PSI <b class="{drift.reading}">{drift.psi:.3f}</b> ({drift.reading})')
        if drift is not None and drift.null_rate_change is not None and drift.null_rate_change:
            facts.append(f"null rate {drift.null_rate_change:+.1%}")
        if isinstance(stats, NumericStats) and stats.mean is not None:
            facts.append(f"mean {stats.mean:.4g}, min {stats.min:.4g}, max {stats.max:.4g}")
        flagged = drift is not None and drift.flagged
        figure = _figure(stats, ref)
        cards.append(
            f'<div class="card{" flag" if flagged else ""}" id="{_anchor(role, name)}"><h3>{_e(name)}</h3>'
            f'<div class="muted">{" &middot; ".join(facts)}</div>{figure}</div>'
        )
    return f'<div class="cards">{"".join(cards)}</div>'


def _psi(drift: ColumnDrift | None) -> float:
    return drift.psi if drift is not None and drift.psi is not None else 0.0


def _figure(stats: ColumnStats, ref: ColumnStats | None) -> str:
    if isinstance(stats, NumericStats):
        mine = None if stats.sketch.is_empty() else stats
        theirs = ref if isinstance(ref, NumericStats) and not ref.sketch.is_empty() else None
        if mine is None and theirs is None:
            return '<p class="muted">no values to draw</p>'
        note = "" if mine is not None else '<p class="muted">no value in this run: the reference alone</p>'
        return note + _svg(_numeric(mine, theirs))
    if isinstance(stats, CategoricalStats) and stats.counts:
        return _svg(_categorical(stats, ref if isinstance(ref, CategoricalStats) else None))
    if isinstance(stats, CategoricalStats) and stats.counts is None:
        return '<p class="muted">more than 1000 distinct values: not drawn</p>'
    return '<p class="muted">no values to draw</p>'


def _numeric(stats: NumericStats | None, ref: NumericStats | None) -> Figure:
    """Both distributions as shares of rows over one set of bins spanning both runs' 0.5%..99.5% quantiles."""
    import numpy as np

    spans = [q for s in (stats, ref) if s is not None and (q := s.quantiles([0.005, 0.995]))]
    lo = min(q[0] for q in spans)
    hi = max(q[1] for q in spans)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, BINS + 1)
    figure = _new_figure()
    axes = figure.add_subplot()
    for sketch_stats, color, filled in ((ref, REFERENCE, True), (stats, CURRENT, False)):
        if sketch_stats is None:
            continue
        pmf = np.asarray(sketch_stats.sketch.get_pmf(list(edges[1:-1]), True))
        shares = pmf[:]  # first and last bins take everything below and above the span
        if filled:
            axes.stairs(shares, edges, fill=True, color=color, alpha=0.45, linewidth=0)
        else:
            axes.stairs(shares, edges, color=color, linewidth=1.8)
    axes.set_ylabel("share of rows")
    axes.yaxis.set_major_formatter(_percent())
    _style(axes)
    return figure


def _categorical(stats: CategoricalStats, ref: CategoricalStats | None) -> Figure:
    import numpy as np

    mine = stats.shares() or {}
    theirs = (ref.shares() or {}) if ref is not None else {}
    names = list(dict.fromkeys([*list(mine)[:TOP], *list(theirs)[:TOP]]))[: TOP + 2]
    names.reverse()
    y = np.arange(len(names))
    figure = _new_figure(height=max(1.6, 0.28 * len(names) + 0.7))
    axes = figure.add_subplot()
    if ref is not None:
        axes.barh(y + 0.2, [theirs.get(n, 0.0) for n in names], height=0.4, color=REFERENCE, alpha=0.7)
        axes.barh(y - 0.2, [mine.get(n, 0.0) for n in names], height=0.4, color=CURRENT)
    else:
        axes.barh(y, [mine.get(n, 0.0) for n in names], height=0.6, color=CURRENT)
    axes.set_yticks(y, [n if len(n) <= 18 else n[:17] + "…" for n in names])
    axes.xaxis.set_major_formatter(_percent())
    axes.set_xlabel("share of non-null rows")
    _style(axes)
    return figure


def _new_figure(height: float = 2.1) -> Figure:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.6, height), dpi=100, layout="constrained")
    return figure


def _percent() -> Any:
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(1.0, decimals=0)


def _style(axes: Any) -> None:
    axes.spines[["top", "right"]].set_visible(False)
    axes.tick_params(labelsize=8)
    axes.xaxis.label.set_size(8)
    axes.yaxis.label.set_size(8)
    axes.grid(axis="y" if axes.get_ylabel() == "share of rows" else "x", color="#eaeef2", linewidth=0.6)
    axes.set_axisbelow(True)


def _svg(figure: Figure) -> str:
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "batchscore"}):
        figure.savefig(buffer, format="svg")
    text = buffer.getvalue()
    return text[text.index("<svg") :]
