"""A run's data-quality stage: summarize each part as it is scored, commit the summary, check drift.

The pipeline hands each scored batch to :meth:`RunQuality.update` and each finished part to
:meth:`RunQuality.finish`; at the commit, :meth:`RunQuality.sidecars` gives the files to write next to
the parts, before the manifest and ``_SUCCESS``:

- ``_batchscore_summary.json``: the merged summary of every part, readable statistics, the run's
  lineage, its coverage, and the drift against the reference (if one was given);
- ``_batchscore_summary_parts.json``: each part's own summary with the identity of its input, so that a
  resumed run merges the parts it keeps with those it scores.

A part summary is a :class:`~batchscore.summary.Summary`: an engine that scores parts in other
processes sends ``Summary.to_bytes()`` back and sets ``quality.parts[index] = Summary.from_bytes(blob)``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from batchscore import drift, storage
from batchscore.errors import InputDataError
from batchscore.summary import (
    SUMMARY,
    SUMMARY_PARTS,
    SUMMARY_VERSION,
    Summary,
    child_name,
    load,
    merge_all,
    plan_summary,
    sample_step,
    summary_file,
)

if TYPE_CHECKING:
    from batchscore.mapping import FeaturePlan
    from batchscore.reader import InputFile
    from batchscore.spec import JobSpec

log = logging.getLogger("batchscore")

LINEAGE = (
    "run_id",
    "runs",
    "job_file",
    "model",
    "model_sha256",
    "provider",
    "onnxruntime_version",
    "batchscore_version",
    "started_at",
    "finished_at",
    "seconds",
    "rows_written",
)
"""What the summary file repeats from the manifest, so that a copied summary still says what made it."""
NO_SIDECARS: dict[str, bytes | None] = {SUMMARY: None, SUMMARY_PARTS: None}
"""What a run without a summary commits: no summary files (an older run's are removed)."""


class RunQuality:
    """The summaries of one output's parts and the drift check of one run; see the module docstring."""

    def __init__(self, spec: JobSpec, plan: FeaturePlan, files: Sequence[InputFile]) -> None:
        self.spec = spec
        options = spec.storage_options
        self.reference = drift.load_reference(spec.reference, options=options) if spec.reference else None
        """Read before anything is scored: a bad reference fails the run early, a missing one is a warning."""
        self.template = plan_summary(plan, files[0], step=sample_step(sum(f.num_rows for f in files)))
        self.parts: dict[int, Summary] = {}
        """Summaries of the parts this run scores, by part index."""
        self.summary: Summary | None = None
        self.coverage: dict[str, Any] = {}
        self.drift: drift.DriftReport | None = None

    def update(self, index: int, batch: pa.RecordBatch, outputs: Sequence[pa.Array]) -> None:
        """Add a scored batch of part ``index``: its feature columns as read and its output columns."""
        part = self.parts.get(index)
        if part is None:
            part = self.parts[index] = self.template.empty()
        part.update(batch, outputs)

    def finish(self, index: int) -> None:
        """Part ``index`` is scored (a part of no rows gets an empty summary)."""
        self.parts.setdefault(index, self.template.empty())

    def sidecars(
        self, folder: str, entries: Mapping[int, Mapping[str, Any]], lineage: Mapping[str, Any]
    ) -> dict[str, bytes | None]:
        """The summary files to commit with the output: ``entries`` are the manifest's parts, by index."""
        kept = _kept_parts(
            folder, {i: e for i, e in entries.items() if i not in self.parts}, options=self.spec.storage_options
        )
        summaries = {**kept, **self.parts}
        missing = sorted(i for i in entries if i not in summaries)
        self.summary = merge_all(summaries[i] for i in sorted(summaries) if i in entries) or self.template.empty()
        self.coverage = {
            "parts": len(entries) - len(missing),
            "parts_total": len(entries),
            "missing_parts": missing,
            "rows": self.summary.rows,
        }
        if missing:
            log.warning(
                "the summary covers %d of %d part(s): part(s) %s were committed by a run that stopped before "
                "writing its summary; pass --mode overwrite to summarize every part",
                len(entries) - len(missing),
                len(entries),
                ", ".join(map(str, missing)),
            )
        self.drift = self._compare(self.summary)
        parts = [
            {**_identity(entries[i]), "summary": summaries[i].to_dict()} for i in sorted(entries) if i in summaries
        ]
        return {
            SUMMARY: summary_file(
                self.summary,
                lineage={"output": folder, **{k: lineage[k] for k in LINEAGE if k in lineage}},
                coverage=self.coverage,
                drift=None if self.drift is None else self.drift.to_dict(),
            ),
            SUMMARY_PARTS: json.dumps(
                {"summary_version": SUMMARY_VERSION, "parts": parts}, separators=(",", ":")
            ).encode(),
        }

    def result(self, folder: str) -> tuple[dict[str, Any] | None, drift.DriftReport | None]:
        """The readable summary and the drift of the output; read from ``folder`` when this run scored nothing."""
        if self.summary is None:
            try:
                saved = load(folder, options=self.spec.storage_options)
            except InputDataError as exc:  # an output written before summaries existed, or with --no-summary
                log.warning("no summary to report for %s (%s)", folder, exc)
                return None, None
            self.summary, self.coverage = saved.summary, saved.coverage
            self.drift = self._compare(saved.summary)
        return {**self.summary.describe(), "coverage": self.coverage}, self.drift

    def enforce(self) -> None:
        """Log the drift check's outcome; raise :class:`~batchscore.errors.DriftError` under ``on_drift="fail"``."""
        if self.drift is not None:
            drift.enforce(self.drift, on_drift=self.spec.on_drift, output=self.spec.out)

    def _compare(self, summary: Summary) -> drift.DriftReport | None:
        if self.reference is None:
            return None
        return drift.compare(
            summary,
            self.reference.summary,
            reference_path=self.spec.reference or self.reference.path,
            max_psi=self.spec.max_psi,
            max_null_rate_change=self.spec.max_null_rate_change,
        )


def _identity(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {k: entry.get(k) for k in ("index", "input", "size", "mtime_ns", "run_id")}


def _kept_parts(
    folder: str, entries: Mapping[int, Mapping[str, Any]], *, options: Mapping[str, Any] | None
) -> dict[int, Summary]:
    """Summaries of parts committed before this run, from the folder's parts file, where they still match.

    ``folder`` is a local path or a URI (``options`` configure its store). A parts file that cannot be read
    leaves those parts unsummarized: :meth:`RunQuality.sidecars` names them.
    """
    if not entries:
        return {}
    path = child_name(folder, SUMMARY_PARTS)
    try:
        blob = storage.resolve(folder, options).child(SUMMARY_PARTS).read_bytes()
        by_index = {p["index"]: p for p in json.loads(blob)["parts"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        if not isinstance(exc, FileNotFoundError):
            log.debug("cannot read %s: %s", path, storage.describe_os_error(exc))
        return {}
    kept = {}
    for index, entry in entries.items():
        part = by_index.get(index)
        if part is not None and {k: part.get(k) for k in _identity(entry)} == _identity(entry):
            kept[index] = Summary.from_dict(part["summary"], source=path)
    return kept
