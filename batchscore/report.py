"""What a run tells its caller: progress while it runs, a report when it is done."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from batchscore import storage
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


def check_report_path(path: str) -> None:
    """Raise before the first row if the report could not be written: a folder on its path is a file,
    the path is a folder, or the nearest existing folder is not writable (read-only mount, permissions)."""
    if storage.is_uri(path) and not path.startswith("file://"):
        return  # an object store: its errors come with the write, after the commit, as one line
    if os.path.isdir(path):
        msg = f"cannot write report {path}: it is a folder; pass --report with a file name, e.g. {path}/report.json"
        raise OutputError(msg)
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        msg = f"cannot write report {path}: {folder} is a file, not a folder; pass --report with another path"
        raise OutputError(msg)
    if not os.access(folder, os.W_OK | os.X_OK):
        msg = f"cannot write report {path}: folder {folder} is not writable; pass --report with a writable path"
        raise OutputError(msg)


def write_report(report: RunReport, path: str, *, options: Mapping[str, Any] | None = None) -> None:
    """Write the report as JSON, atomically: to a local path or an object store URI."""
    data = json.dumps({**report.to_dict(), "host": platform.node()}, indent=2) + "\n"
    try:
        storage.resolve(path, options).write_bytes(data.encode())
    except OSError as exc:
        msg = f"cannot write report {path}: {storage.describe_os_error(exc)}; check the path and permissions"
        raise OutputError(msg) from exc
