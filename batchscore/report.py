"""What a run tells its caller: progress while it runs, a report when it is done."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from batchscore.errors import OutputError


@dataclass(frozen=True)
class Progress:
    """What a progress callback is told after each scored batch."""

    rows: int
    total_rows: int
    files_done: int
    total_files: int


ProgressCallback = Callable[[Progress], None]


@dataclass
class RunReport:
    """What a run did; written as JSON by ``--report``."""

    run_id: str
    output: str
    model: str
    model_sha256: str
    provider: str
    onnxruntime_version: str
    batchscore_version: str
    features: list[str]
    keep: list[str]
    files: list[dict[str, Any]]
    parts: list[str] = field(default_factory=list)
    rows_read: int = 0
    rows_written: int = 0
    rows_null_output: int = 0
    rows_filtered: int = 0
    parts_skipped: int = 0
    """Parts a resumed run found already committed and did not score again."""
    null_counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    rows_per_s: float = 0.0
    peak_rss_mb: float = 0.0
    """This process's peak memory; workers of the processes and ray engines have their own."""
    started_at: str = ""
    summary: dict[str, Any] | None = None
    """Per-feature and per-output statistics of the output (``DIR/_batchscore_summary.json``, readable part)."""
    drift: dict[str, Any] | None = None
    """The comparison with ``--reference``, worst columns first; None without a reference."""
    engine: str = "local"
    workers: list[dict[str, Any]] = field(default_factory=list)
    """What each worker did: ``worker``, ``host``, ``pid``, ``tasks``, ``rows`` (and ``model_loads``)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB."""
    if sys.platform == "win32":
        return 0.0  # no getrusage; the report says 0
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def write_report(report: RunReport, path: str) -> None:
    """Write the report as JSON, atomically."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({**report.to_dict(), "host": platform.node()}, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
    except OSError as exc:
        msg = f"cannot write report {path}: {exc}; check the path and permissions"
        raise OutputError(msg) from exc
