"""A Delta table's history, read from its log only: what ``batchscore inspect OUT`` shows.

Per version: the date, the operation, the night it replaced, the rows it
added, and for batchscore's commits the model, its sha256 and the run id.
Nothing here reads data files: the pyarrow dataset path whose teardown can
abort the process at exit (delta-rs#2184) is never taken.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from batchscore import _deltastore
from batchscore.delta import METADATA_KEY, deltalake, first_line
from batchscore.errors import OutputError


def describe(path: str, *, storage_options: Mapping[str, object] | None = None) -> dict[str, Any]:
    """The table and its history, newest first: per version its time, operation, unit, rows, model and run.

    ``storage_options`` are the run's (pyarrow's names, as ``--storage-option`` gives them).
    """
    dl = deltalake()
    options = _deltastore.delta_options(path, storage_options)
    try:
        table = dl.DeltaTable(path, storage_options=options)
        actions = pa.table(table.get_add_actions(flatten=True))
        history = table.history()
    except (dl.exceptions.DeltaError, OSError) as exc:
        said = _deltastore.explain(exc, path) or f"{first_line(exc)}; check the path"
        msg = f"cannot read Delta table {path}: {said}"
        raise OutputError(msg) from exc
    rows = sum(r or 0 for r in actions.column("num_records").to_pylist()) if actions.num_rows else 0
    versions = [_version_line(h) for h in history]
    return {
        "table": path,
        "version": table.version(),
        "partition_by": ", ".join(table.metadata().partition_columns) or "none",
        "files": actions.num_rows,
        "rows": rows,
        "columns": [f"{f.name}: {f.type}" for f in pa.schema(table.schema().to_arrow())],
        "history": versions,
    }


def _version_line(commit: dict[str, Any]) -> dict[str, Any]:
    raw = commit.get(METADATA_KEY)
    ours: dict[str, Any] = raw if isinstance(raw, dict) else {}
    metrics = commit.get("operationMetrics") or {}
    stamp = commit.get("timestamp")
    when = datetime.fromtimestamp(stamp / 1000, UTC).isoformat(timespec="seconds") if stamp else ""
    line: dict[str, Any] = {
        "version": commit.get("version"),
        "date": when,
        "operation": commit.get("operation"),
        "partition": ours.get("partition") or (commit.get("operationParameters") or {}).get("predicate") or "",
        "rows": metrics.get("num_added_rows"),
    }
    if ours:
        line["model"] = ours.get("model")
        line["model_sha256"] = ours.get("model_sha256")
        line["run_id"] = ours.get("run_id")
        line["batchscore_version"] = ours.get("batchscore_version")
    return line


def render_history(info: dict[str, Any]) -> str:
    """``describe()`` as text: the table, then one line per version."""
    lines = [f"{k}: {v}" for k, v in info.items() if k not in ("history", "columns")]
    lines.append("columns: " + ", ".join(info["columns"]))
    lines.append("history (newest first):")
    for v in info["history"]:
        rows = f"{v['rows']:,} rows" if isinstance(v.get("rows"), int) else "-"
        model = ""
        if v.get("model"):
            sha = str(v.get("model_sha256"))[:12]
            model = f"  model {os.path.basename(str(v['model']))} ({sha})  run {v.get('run_id')}"
        lines.append(f"  v{v['version']}  {v['date']}  {v['operation']}  {v['partition'] or '-'}  {rows}{model}")
    return "\n".join(lines)
