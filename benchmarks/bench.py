"""Benchmark harness for ``batchscore`` (run via ``make bench``).

Usage::

    .venv/bin/python benchmarks/bench.py                 # 5M rows, all models
    .venv/bin/python benchmarks/bench.py --quick         # ~200k rows smoke run
    .venv/bin/python benchmarks/bench.py --models logreg,gbt --rows 1000000 --keep-data

Every measurement runs in its own fresh subprocess, so peak RSS is that
process's ``ru_maxrss`` (taken with ``os.wait4`` by the small ``launch.py``
launcher, which keeps this process's RSS out of the number and also covers any
child processes the contender reaped).  Contenders per model:

* ``inference``       -- onnxruntime ``session.run`` alone on pre-converted float32 input (once: a reference);
* ``plain``           -- the hand-written pyarrow + onnxruntime loop;
* ``polars_read_all`` -- ``pl.scan_parquet(f).collect()`` (every column) + one ``session.run`` per file;
* ``polars_select``   -- the careful Polars loop: ``scan_parquet(f).select(id + features).collect()``;
* ``batchscore``      -- ``python -m batchscore score ...`` end to end.

The peers and batchscore run in interleaved rounds (``--rounds``, 3 by default:
each round runs every contender once, in an order rotated by one each round),
so a machine that slows down for a while slows all of them; each contender's
rate is the median of its rounds, and batchscore's ratio to the best peer is
the median over rounds of (batchscore / the fastest peer of that round).
LogisticRegression is also scored on its first 2M rows, where start-up weighs
more.

Then the engines (``--engine-models``, default logreg and mlp), side by side on the
same files: ``local`` (the default engine), ``processes`` (2 workers), ``ray`` (a local
cluster started by the run) and ``raydata``, the plain Ray Data pipeline a user writes
(``read_parquet -> map_batches(actor class) -> write_parquet``), with rows/s and the peak
memory of all their processes together (``launch.py`` samples the process tree).

Plus data-wide stage-alone numbers (Parquet read, float64->float32
conversion, Parquet write), the peak-RSS flatness of batchscore (1/4 of the
files vs all of them), its peak RSS on one 15M-row row group against the same
rows in 128k-row groups (``--row-group-rows``), the same with ``--format delta`` (rate
and peak RSS of the Delta Lake output) and its start-up (``import batchscore``;
``batchscore score`` of a 10-row file, whole process).  The results are printed as
tables with PASS/FAIL against the performance targets and written to a JSON file.

The module has no import-time side effects; call :func:`main` with an argv
list (e.g. ``main(['--quick', '--rows', '20000', '--models', 'logreg'])``) to
run it programmatically -- it returns the results dict.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

if __package__:
    from . import datagen
else:  # executed as a script: benchmarks/ is sys.path[0]
    import datagen  # type: ignore[no-redef]

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
WORKER = BENCH_DIR / "worker.py"
LAUNCHER = BENCH_DIR / "launch.py"
DEFAULT_CACHE = BENCH_DIR / ".cache"
DEFAULT_JSON = BENCH_DIR / "results.json"

DEFAULT_ROWS = 5_000_000
DEFAULT_FILES = 10
QUICK_ROWS = 200_000
QUICK_FILES = 4
QUICK_TRAIN_ROWS = 5_000

#: Per-model cap on the rows each contender scores, so that the default run
#: fits in ~10 minutes on a 2-core machine.  Contenders of one model always
#: score the same files (the first k files whose rows fit under the cap, at
#: least one), so the ratios stay apples to apples.  ``--no-caps`` disables.
MODEL_ROW_CAPS: dict[str, int] = {
    "gbt": 3_000_000,
    "mlp": 3_000_000,
    "regressor": 2_000_000,
    "logreg_2m": 2_000_000,
}

#: Extra cases: a name, the model it scores (its row cap is in MODEL_ROW_CAPS).
EXTRA_CASES: dict[str, str] = {"logreg_2m": "logreg"}
#: One row group of this many rows (the issue's worst case), against the same rows in 128k-row groups.
ROW_GROUP_ROWS = 15_000_000
QUICK_ROW_GROUP_ROWS = 1_500_000

RSS_LIMIT_MB = 500.0
RSS_FLAT_LIMIT = 0.10
STARTUP_LIMIT_S = 0.3
IMPORT_LIMIT_S = 0.15
INRUN_LIMIT = 3.0e6
DEFAULT_ROUNDS = 3
SUMMARY_COST_LIMIT = 0.05

PEERS = ("plain", "polars_read_all", "polars_select")
E2E = (*PEERS, "batchscore")
ENGINES = ("local", "processes", "ray", "raydata")
ENGINE_MODELS = ("logreg", "mlp")
ENGINE_WORKERS = 2
WHOLE_PROCESS = (*E2E, "no_summary", *ENGINES)
"""Contenders whose rate is rows / process wall time (start-up included)."""
#: Minimum batchscore / best-peer ratio per case (median of the rounds).
BEST_PEER_TARGETS: dict[str, float] = {"logreg": 1.4, "logreg_2m": 1.25, "gbt": 1.0, "mlp": 1.0}


def log(msg: str = "") -> None:
    """Print a progress line immediately."""
    print(msg, flush=True)


# --------------------------------------------------------------------------
# subprocess plumbing
# --------------------------------------------------------------------------


@dataclass
class ChildResult:
    """Outcome of one child process."""

    cmd: list[str]
    returncode: int
    wall_s: float
    maxrss_mb: float
    stdout: str
    stderr: str
    timed_out: bool = False
    tree_peak_mb: float = 0.0
    """Peak memory of all the command's processes together (PSS), for the engines."""

    @property
    def ok(self) -> bool:
        """True when the child exited 0 within its time limit."""
        return self.returncode == 0 and not self.timed_out

    def stderr_tail(self, n: int = 15) -> str:
        """Last ``n`` lines of stderr (for failure reports)."""
        return "\n".join(self.stderr.strip().splitlines()[-n:])


CHILD_ENV: dict[str, str] | None = None
"""The children's environment (:func:`compiled_children`); None: this process's."""


def compiled_children(cache_dir: Path) -> None:
    """Let every child run from compiled bytecode, as an installed package does.

    pip compiles a package's modules when it installs it, but an editable install run
    with ``PYTHONDONTWRITEBYTECODE=1`` (as some shells and CI images set) compiles all of
    batchscore's modules again in every process: 0.1-0.2 s of start-up that no installed
    copy pays, charged to batchscore alone (the peers' libraries are compiled). The
    children write and read their bytecode under ``cache_dir``, not in the source tree.
    """
    global CHILD_ENV
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(cache_dir / "pycache")
    sources = [str(REPO_ROOT / "batchscore"), str(WORKER), str(LAUNCHER)]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *sources], env=env, check=False, capture_output=True)
    CHILD_ENV = env


def run_child(
    cmd: Sequence[str], timeout_s: float, cwd: Path = REPO_ROOT, env: dict[str, str] | None = None
) -> ChildResult:
    """Run ``cmd`` via ``launch.py`` and return its wall time and peak RSS.

    The launcher (a fresh, small interpreter) forks ``cmd`` and reads its
    ``ru_maxrss`` with ``os.wait4``: exact for that process (and whatever it
    reaped), and not inflated by this process's own RSS, which a directly
    forked child would inherit as its starting high-water mark.  Output goes
    to temporary files so no pipe can fill up and stall the child.
    """
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        result_path = Path(tmp) / "result.json"
        out_path, err_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
        launcher = [sys.executable, "-S", str(LAUNCHER), str(result_path), str(timeout_s), "--", *cmd]
        with out_path.open("wb") as out, err_path.open("wb") as err:
            try:
                proc = subprocess.run(
                    launcher,
                    cwd=cwd,
                    env=env if env is not None else CHILD_ENV,
                    stdout=out,
                    stderr=err,
                    stdin=subprocess.DEVNULL,
                    timeout=timeout_s + 60,
                    check=False,
                )
                launcher_rc = proc.returncode
            except subprocess.TimeoutExpired:
                launcher_rc = -1
        stdout = out_path.read_text(errors="replace")
        stderr = err_path.read_text(errors="replace")
        try:
            meas = json.loads(result_path.read_text())
        except (OSError, ValueError):
            return ChildResult(
                cmd=list(cmd),
                returncode=launcher_rc or -1,
                wall_s=0.0,
                maxrss_mb=0.0,
                stdout=stdout,
                stderr=stderr + f"\n[launcher failed, exit {launcher_rc}]",
                timed_out=launcher_rc == -1,
            )
        return ChildResult(
            cmd=list(cmd),
            returncode=int(meas["returncode"]),
            wall_s=float(meas["wall_s"]),
            maxrss_mb=float(meas["maxrss_kb"]) / 1024.0,
            stdout=stdout,
            stderr=stderr,
            timed_out=bool(meas["timed_out"]),
            tree_peak_mb=float(meas.get("tree_peak_kb", 0)) / 1024.0,
        )


@dataclass
class Measurement:
    """One contender (or stage) measured in its own process."""

    name: str
    rows: int = 0
    wall_s: float = 0.0
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    ok: bool = False
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        """Headline rate.

        For end-to-end contenders this is rows / process wall time (interpreter
        start-up and imports included, identical treatment for all three); for
        stages and inference-only it is rows / the timed section.
        """
        secs = self.wall_s if self.name in WHOLE_PROCESS else self.seconds
        return self.rows / secs if self.ok and secs > 0 else 0.0

    @property
    def internal_rows_per_s(self) -> float:
        """Rows / seconds measured inside the child (0 when unknown)."""
        return self.rows / self.seconds if self.ok and self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable view."""
        return {
            "ok": self.ok,
            "rows": self.rows,
            "wall_s": round(self.wall_s, 4),
            "seconds": round(self.seconds, 4),
            "rows_per_s": round(self.rows_per_s, 1),
            "internal_rows_per_s": round(self.internal_rows_per_s, 1),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "error": self.error,
            **self.extra,
        }


def run_worker(name: str, spec: dict[str, Any], timeout_s: float) -> Measurement:
    """Run one ``worker.py`` kind in a fresh interpreter and parse its JSON line."""
    res = run_child([sys.executable, str(WORKER), json.dumps(spec)], timeout_s)
    m = Measurement(name=name, wall_s=res.wall_s, peak_rss_mb=res.maxrss_mb)
    m.extra["tree_peak_mb"] = round(res.tree_peak_mb, 1)
    if not res.ok:
        m.error = ("timed out; " if res.timed_out else f"exit {res.returncode}; ") + res.stderr_tail()
        return m
    try:
        payload = json.loads(res.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        m.error = f"unparseable worker output: {res.stdout[-500:]!r}"
        return m
    m.ok = True
    m.rows = int(payload["rows"])
    m.seconds = float(payload["seconds"])
    m.extra["self_maxrss_mb"] = round(float(payload.get("maxrss_mb", 0.0)), 1)
    if "cpu_us_per_row" in payload:
        m.extra["cpu_us_per_row"] = {k: round(float(v), 4) for k, v in payload["cpu_us_per_row"].items()}
    return m


def count_parquet_rows(path: Path) -> int:
    """Total rows of all ``*.parquet`` files under ``path`` (from footers only)."""
    import pyarrow.parquet as pq

    if not path.exists():
        return 0
    return sum(pq.ParquetFile(p).metadata.num_rows for p in sorted(path.rglob("*.parquet")))


def batchscore_cmd(
    files: Sequence[Path],
    model: Path,
    out_dir: Path,
    report: Path,
    features: Sequence[str] = datagen.FEATURES,
    *,
    summary: bool = True,
    extra: Sequence[str] = (),
) -> list[str]:
    """The ``batchscore score`` command line the benchmark runs (``summary=False``: with ``--no-summary``;
    ``extra``: more flags, e.g. ``--format delta``)."""
    return [
        sys.executable,
        "-m",
        "batchscore",
        "score",
        *map(str, files),
        "--model",
        str(model),
        "--out",
        str(out_dir),
        "--features",
        ",".join(features),
        "--keep",
        "id",
        "--mode",
        "overwrite",
        "--quiet",
        "--report",
        str(report),
        *([] if summary else ["--no-summary"]),
        *extra,
    ]


def run_batchscore(
    files: Sequence[Path],
    model: Path,
    out_dir: Path,
    timeout_s: float,
    expect_rows: int,
    features: Sequence[str] = datagen.FEATURES,
    *,
    summary: bool = True,
    name: str | None = None,
    extra: Sequence[str] = (),
    keep_output: bool = False,
) -> Measurement:
    """Run the batchscore CLI end to end; never raises on a batchscore failure.

    The rows written are counted from the Parquet files under ``out_dir``: the
    parts, or the data files of a Delta table written once (its only version).
    """
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    report = out_dir.parent / f"{out_dir.name}.report.json"
    report.unlink(missing_ok=True)
    res = run_child(batchscore_cmd(files, model, out_dir, report, features, summary=summary, extra=extra), timeout_s)
    name = name or ("batchscore" if summary else "no_summary")
    m = Measurement(name=name, wall_s=res.wall_s, seconds=res.wall_s, peak_rss_mb=res.maxrss_mb)
    m.extra["tree_peak_mb"] = round(res.tree_peak_mb, 1)
    if not res.ok:
        m.error = ("timed out; " if res.timed_out else f"exit {res.returncode}; ") + res.stderr_tail()
        log(f"    batchscore FAILED ({m.error.splitlines()[0] if m.error else ''})")
        for line in res.stderr_tail().splitlines():
            log(f"      | {line}")
        shutil.rmtree(out_dir, ignore_errors=True)
        return m
    rep: dict[str, Any] = {}
    if report.exists():
        try:
            rep = json.loads(report.read_text())
        except ValueError:
            rep = {}
    written = count_parquet_rows(out_dir)
    m.ok = True
    m.rows = expect_rows
    if isinstance(rep.get("seconds"), int | float) and rep["seconds"] > 0:
        m.seconds = float(rep["seconds"])
    m.extra["rows_in_output"] = written
    m.extra["report"] = {
        k: rep[k] for k in ("rows_written", "seconds", "rows_per_s", "provider", "peak_rss_mb") if k in rep
    }
    if written != expect_rows:
        m.extra["warning"] = f"output has {written} rows, expected {expect_rows}"
        log(f"    WARNING: batchscore output has {written:,} rows, expected {expect_rows:,}")
    if not keep_output:
        shutil.rmtree(out_dir, ignore_errors=True)
    report.unlink(missing_ok=True)
    return m


# --------------------------------------------------------------------------
# formatting helpers
# --------------------------------------------------------------------------


def fmt_rate(r: float) -> str:
    """Human rows/s, e.g. ``3.21M``."""
    if r <= 0:
        return "-"
    return f"{r / 1e6:.2f}M" if r >= 1e5 else f"{r / 1e3:.1f}k"


def fmt_ratio(r: float | None) -> str:
    """Ratio with an ``x`` suffix, or ``-``."""
    return "-" if r is None else f"{r:.2f}x"


def ratio(a: Measurement | None, b: Measurement | None) -> float | None:
    """``a.rows_per_s / b.rows_per_s`` when both succeeded."""
    if a is None or b is None or not a.ok or not b.ok or b.rows_per_s <= 0:
        return None
    return a.rows_per_s / b.rows_per_s


def check(name: str, target: str, value: float | None, passed: bool | None, note: str = "") -> dict[str, Any]:
    """One PASS/FAIL record; ``passed=None`` means it could not be evaluated (counted as FAIL)."""
    return {
        "name": name,
        "target": target,
        "value": None if value is None else round(value, 4),
        "pass": bool(passed),
        "note": note if passed is not None else (note or "not measured"),
    }


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print a simple left/right aligned text table."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True)))
    log(line)
    log("-" * len(line))
    for r in rows:
        log("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))


# --------------------------------------------------------------------------
# environment
# --------------------------------------------------------------------------


def _dist_version(*names: str) -> str | None:
    """Installed version of the first distribution found among ``names``."""
    for n in names:
        try:
            return metadata.version(n)
        except metadata.PackageNotFoundError:
            continue
    return None


def machine_info() -> dict[str, Any]:
    """CPU, memory and library versions for the results file."""
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb: float | None = None
    with contextlib.suppress(ValueError, OSError, AttributeError):
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    try:
        load: list[float] | None = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return {
        "loadavg_at_start": load,
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "cpu_model": cpu_model,
        "memory_gb": mem_gb,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            "onnxruntime": _dist_version("onnxruntime-gpu", "onnxruntime"),
            "pyarrow": _dist_version("pyarrow"),
            "numpy": _dist_version("numpy"),
            "polars": _dist_version("polars"),
            "scikit-learn": _dist_version("scikit-learn"),
            "skl2onnx": _dist_version("skl2onnx"),
            "batchscore": _dist_version("batchscore"),
        },
    }


# --------------------------------------------------------------------------
# benchmark sections
# --------------------------------------------------------------------------


def files_for_model(ds: datagen.Dataset, model: str, caps: bool) -> tuple[list[Path], int, str]:
    """Files a model's contenders score, their row total, and a note if capped."""
    cap = MODEL_ROW_CAPS.get(model) if caps or model in EXTRA_CASES else None
    if cap is None or cap >= sum(ds.file_rows):
        return list(ds.files), sum(ds.file_rows), ""
    chosen: list[Path] = []
    total = 0
    for f, n in zip(ds.files, ds.file_rows, strict=True):
        if chosen and total + n > cap:
            break
        chosen.append(f)
        total += n
    note = f"capped: {len(chosen)}/{len(ds.files)} files, {total:,} rows (cap {cap:,})"
    return chosen, total, note


def bench_stages(ds: datagen.Dataset, out_root: Path, timeout_s: float) -> dict[str, Measurement]:
    """Data-wide stage-alone numbers: read, convert, write."""
    files = [str(f) for f in ds.files]
    feats = list(datagen.FEATURES)
    stages: dict[str, Measurement] = {}
    log("stages (each in a fresh process):")
    stages["read"] = run_worker("read", {"kind": "stage_read", "files": files, "columns": ["id", *feats]}, timeout_s)
    log(f"  read     {fmt_rate(stages['read'].rows_per_s):>8} rows/s  {stages['read'].peak_rss_mb:7.0f} MB")
    stages["convert"] = run_worker("convert", {"kind": "stage_convert", "files": files, "features": feats}, timeout_s)
    log(f"  convert  {fmt_rate(stages['convert'].rows_per_s):>8} rows/s  {stages['convert'].peak_rss_mb:7.0f} MB")
    out_dir = out_root / "stage_write"
    shutil.rmtree(out_dir, ignore_errors=True)
    stages["write"] = run_worker(
        "write", {"kind": "stage_write", "out_dir": str(out_dir), "file_rows": ds.file_rows}, timeout_s
    )
    shutil.rmtree(out_dir, ignore_errors=True)
    log(f"  write    {fmt_rate(stages['write'].rows_per_s):>8} rows/s  {stages['write'].peak_rss_mb:7.0f} MB")
    for m in stages.values():
        if not m.ok:
            log(f"  stage {m.name} FAILED: {m.error}")
    return stages


def _median_run(runs: list[Measurement]) -> Measurement:
    """The run whose rate is the median of the successful ones (the lower middle one for an even count)."""
    good = sorted((m for m in runs if m.ok), key=lambda m: m.rows_per_s)
    return good[(len(good) - 1) // 2] if good else runs[0]


def run_contender(
    contender: str, files: list[Path], model_path: Path, rows: int, out_dir: Path, args: argparse.Namespace
) -> Measurement:
    """One run of one contender, its output checked for the row count, then removed."""
    shutil.rmtree(out_dir, ignore_errors=True)
    if contender in ("batchscore", "no_summary"):
        m = run_batchscore(files, model_path, out_dir, args.child_timeout, rows, summary=contender == "batchscore")
    else:
        kind = "infer" if contender == "inference" else contender
        spec = {
            "kind": kind,
            "files": [str(f) for f in files],
            "features": list(datagen.FEATURES),
            "model": str(model_path),
            "out_dir": str(out_dir),
        }
        m = run_worker(contender, spec, args.child_timeout)
        if m.ok and contender != "inference":
            written = count_parquet_rows(out_dir)
            m.extra["rows_in_output"] = written
            if written != rows:
                m.extra["warning"] = f"output has {written} rows, expected {rows}"
                log(f"    WARNING: {contender} output has {written:,} rows, expected {rows:,}")
        if not m.ok:
            log(f"    {contender} FAILED: {m.error}")
    shutil.rmtree(out_dir, ignore_errors=True)
    return m


def bench_model(ds: datagen.Dataset, case: str, out_root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Inference-only once, then the peers and batchscore in interleaved rounds, for one case."""
    model = EXTRA_CASES.get(case, case)
    files, rows, note = files_for_model(ds, case, caps=not args.no_caps)
    model_path = ds.models[model]
    log(f"{case}: {len(files)} files, {rows:,} rows{'  [' + note + ']' if note else ''}")
    results: dict[str, Measurement] = {}
    if "inference" not in args.skip and case not in EXTRA_CASES:
        results["inference"] = run_contender("inference", files, model_path, rows, out_root / case / "inference", args)
        log(f"  {'inference':<16} {fmt_rate(results['inference'].rows_per_s):>8} rows/s")
    contenders = [c for c in E2E if c not in args.skip and not (c.startswith("polars") and "polars" in args.skip)]
    if case == "logreg" and "batchscore" in contenders and "no_summary" not in args.skip:
        contenders.append("no_summary")  # batchscore --no-summary: what the run summary costs (issue 11)
    runs: dict[str, list[Measurement]] = {c: [] for c in contenders}
    for round_no in range(args.rounds if contenders else 0):  # --skip may leave none
        order = contenders[round_no % len(contenders) :] + contenders[: round_no % len(contenders)]
        for contender in order:
            m = run_contender(contender, files, model_path, rows, out_root / case / contender, args)
            runs[contender].append(m)
        log(f"  round {round_no + 1}: " + "  ".join(f"{c} {fmt_rate(runs[c][-1].rows_per_s)}" for c in contenders))
    for contender, measured in runs.items():
        median = _median_run(measured)
        median.extra["rounds_rows_per_s"] = [round(r.rows_per_s, 1) for r in measured]
        median.extra["rounds_internal_rows_per_s"] = [round(r.internal_rows_per_s, 1) for r in measured]
        median.extra["max_peak_rss_mb"] = round(max(r.peak_rss_mb for r in measured), 1)
        results[contender] = median
    per_round: list[float] = []
    for round_no in range(args.rounds):
        bs = runs.get("batchscore", [])
        peers = [runs[p][round_no] for p in PEERS if p in runs]
        if len(bs) > round_no and bs[round_no].ok and peers and all(p.ok for p in peers):
            per_round.append(bs[round_no].rows_per_s / max(p.rows_per_s for p in peers))
    return {
        "files": len(files),
        "rows": rows,
        "note": note,
        "contenders": results,
        "best_peer_ratios": [round(r, 4) for r in per_round],
        "best_peer_ratio": statistics.median(per_round) if per_round else None,
    }


def output_facts(out_dir: Path) -> dict[str, Any]:
    """How an output looks to its reader: files, whether ids come in input order, whether _SUCCESS is there."""
    import pyarrow.parquet as pq

    parts = sorted(p for p in out_dir.rglob("*.parquet") if not p.name.startswith(("_", ".")))
    previous, ordered = -1, True
    for part in parts:
        ids = pq.read_table(part, columns=["id"])["id"].to_numpy()
        if len(ids) and (ids[0] <= previous or (ids[1:] < ids[:-1]).any()):
            ordered = False
            break
        previous = int(ids[-1]) if len(ids) else previous
    return {"files_out": len(parts), "in_order": ordered, "success_marker": (out_dir / "_SUCCESS").exists()}


def bench_engines(ds: datagen.Dataset, model: str, out_root: Path, args: argparse.Namespace) -> dict[str, Measurement]:
    """The engines side by side on one model's files: rows/s and the peak memory of all their processes."""
    files, rows, note = files_for_model(ds, model, caps=not args.no_caps)
    log(f"engines, model {model}: {len(files)} files, {rows:,} rows{'  [' + note + ']' if note else ''}")
    results: dict[str, Measurement] = {}
    if "stage_cpu" not in args.skip:
        results["stage_cpu"] = m = stage_cpu(ds, model, files, out_root, args.child_timeout)
        if m.ok:
            bytes_per_row = sum(f.stat().st_size for f in files) / rows
            m.extra["projection"] = projection(m.extra["cpu_us_per_row"], tasks=len(files), bytes_per_row=bytes_per_row)
            costs = ", ".join(f"{k} {v:.3f}" for k, v in m.extra["cpu_us_per_row"].items())
            log(f"  CPU per row (us): {costs}")
        else:
            log(f"    stage_cpu FAILED: {m.error.splitlines()[0] if m.error else ''}")
    for engine in ENGINES:
        if engine in args.skip or engine not in args.engines:
            continue
        out_dir = out_root / "engines" / model / engine
        shutil.rmtree(out_dir, ignore_errors=True)
        if engine == "raydata":
            spec = {
                "kind": "raydata",
                "files": [str(f) for f in files],
                "features": list(datagen.FEATURES),
                "model": str(ds.models[model]),
                "out_dir": str(out_dir),
                # Two actors of one CPU each on a 2-CPU machine leave no CPU for the read and write tasks, and the
                # pipeline waits forever (measured here, as in ray-project/ray#44687): one core stays free for them.
                "actors": max(1, min(ENGINE_WORKERS, (os.cpu_count() or 2) - 1)),
            }
            m = run_worker("raydata", spec, args.raydata_timeout)
            if not m.ok and "timed out" in m.error:
                m.error = f"hung: no result after {args.raydata_timeout:.0f} s (see ray-project/ray#44687)"
        else:
            extra = ["--engine", engine]
            if engine != "local":
                extra += ["--workers", str(ENGINE_WORKERS)]
            m = run_batchscore(
                files, ds.models[model], out_dir, args.child_timeout, rows, name=engine, extra=extra, keep_output=True
            )
        if m.ok:
            m.extra.update(output_facts(out_dir))
        else:
            log(f"    {engine} FAILED: {m.error.splitlines()[0] if m.error else ''}")
        shutil.rmtree(out_dir, ignore_errors=True)
        results[engine] = m
        log(
            f"  {engine:<10} {fmt_rate(m.rows_per_s):>8} rows/s  {m.extra.get('tree_peak_mb', 0):7.0f} MB all processes"
            f"  {m.wall_s:6.2f} s wall"
        )
    return results


PROJECT_CORES = (16, 64)


def stage_cpu(ds: datagen.Dataset, model: str, files: Sequence[Path], out_root: Path, timeout_s: float) -> Measurement:
    """CPU microseconds per row of each stage (read, assemble, infer on one thread, write), on two files."""
    out_dir = out_root / "engines" / model / "stage_cpu"
    spec = {
        "kind": "stage_cpu",
        "files": [str(f) for f in files[:2]],
        "features": list(datagen.FEATURES),
        "model": str(ds.models[model]),
        "out_dir": str(out_dir),
    }
    m = run_worker("stage_cpu", spec, timeout_s)
    shutil.rmtree(out_dir, ignore_errors=True)
    return m


def projection(cpu_us: dict[str, float], *, tasks: int, bytes_per_row: float) -> dict[str, Any]:
    """What the processes and Ray engines can reach on more cores, from the CPU cost of each stage.

    A task's pipeline overlaps its stages, so it keeps ``total / slowest stage`` cores busy; the
    engine keeps ``min(cores, tasks x that)`` busy at ``1e6 / total`` rows/s each. ``bytes_per_row``
    says what that rate asks of the storage holding the inputs.
    """
    total = sum(cpu_us.values())
    slowest = max(cpu_us, key=lambda k: cpu_us[k])
    per_task_cores = total / cpu_us[slowest]
    out: dict[str, Any] = {
        "cpu_us_per_row": round(total, 3),
        "slowest_stage": slowest,
        "cores_one_task_keeps_busy": round(per_task_cores, 2),
    }
    for cores in PROJECT_CORES:
        busy = min(cores, tasks * per_task_cores)
        rate = busy * 1e6 / total
        full = cores * 1e6 / total  # with at least cores / per_task_cores tasks (more files, or pieces)
        out[f"cores_{cores}"] = {
            "rows_per_s": round(rate),
            "bound": "tasks (too few input files)" if busy < cores else "CPU",
            "rows_per_s_enough_tasks": round(full),
            "input_gb_per_s_enough_tasks": round(full * bytes_per_row / 1e9, 2),
        }
    return out


def print_engine_table(model: str, engines: dict[str, Measurement]) -> None:
    """Per-model engine table: rows/s over the whole run, peak memory of all processes, what the output is."""
    log()
    log(f"== engines, {model} ({ENGINE_WORKERS} workers where it applies)")
    rows: list[list[str]] = []
    local = engines.get("local")
    for name, m in engines.items():
        if name == "stage_cpu":
            continue
        if not m.ok:
            rows.append([name, "FAILED", "-", "-", "-", "-", "-", m.error.splitlines()[0][:60] if m.error else ""])
            continue
        rows.append(
            [
                name,
                fmt_rate(m.rows_per_s),
                fmt_ratio(ratio(m, local)),
                f"{m.wall_s:.2f}",
                f"{m.extra.get('tree_peak_mb', 0):.0f}",
                str(m.extra.get("files_out", "-")),
                "yes" if m.extra.get("in_order") else "no",
                "yes" if m.extra.get("success_marker") else "no",
            ]
        )
    print_table(["engine", "rows/s", "/ local", "wall s", "peak MB, all", "files", "in order", "_SUCCESS"], rows)
    cpu = engines.get("stage_cpu")
    if cpu is not None and cpu.ok:
        proj = cpu.extra["projection"]
        costs = ", ".join(f"{k} {v:.3f}" for k, v in cpu.extra["cpu_us_per_row"].items())
        log(f"CPU per row: {costs} us (total {proj['cpu_us_per_row']:.3f}); slowest stage: {proj['slowest_stage']}")
        for cores in PROJECT_CORES:
            p = proj[f"cores_{cores}"]
            log(
                f"  {cores} cores: ~{fmt_rate(p['rows_per_s'])} rows/s on these files (bound: {p['bound']}); "
                f"~{fmt_rate(p['rows_per_s_enough_tasks'])} rows/s with enough tasks, reading "
                f"{p['input_gb_per_s_enough_tasks']:.1f} GB/s of input"
            )


def bench_flatness(ds: datagen.Dataset, out_root: Path, timeout_s: float, full: Measurement | None) -> dict[str, Any]:
    """batchscore peak RSS on 1/4 of the files vs all of them (logreg model)."""
    k = max(1, len(ds.files) // 4)
    quarter_files = ds.files[:k]
    quarter_rows = sum(ds.file_rows[:k])
    total_rows = sum(ds.file_rows)
    log(f"peak-RSS flatness (batchscore, logreg): {k} vs {len(ds.files)} files")
    q = run_batchscore(quarter_files, ds.models["logreg"], out_root / "flat" / "quarter", timeout_s, quarter_rows)
    if full is None or not full.ok or full.rows != total_rows:
        full = run_batchscore(ds.files, ds.models["logreg"], out_root / "flat" / "full", timeout_s, total_rows)
    growth = (full.peak_rss_mb / q.peak_rss_mb - 1.0) if q.ok and full.ok and q.peak_rss_mb > 0 else None
    log(
        f"  quarter {q.peak_rss_mb:7.0f} MB  full {full.peak_rss_mb:7.0f} MB  "
        f"growth {'-' if growth is None else f'{growth * 100:+.1f}%'}"
    )
    return {
        "files_small": k,
        "files_full": len(ds.files),
        "rows_small": quarter_rows,
        "rows_full": total_rows,
        "rows_ratio": round(total_rows / quarter_rows, 3) if quarter_rows else None,
        "small": q.to_dict(),
        "full": full.to_dict(),
        "rss_ratio": None if growth is None else round(1.0 + growth, 4),
        "rss_growth": None if growth is None else round(growth, 4),
    }


def bench_row_group(pair: datagen.RowGroupPair, out_root: Path, timeout_s: float) -> dict[str, Any]:
    """batchscore peak RSS on one row group of all the rows vs the same rows in 128k-row groups."""
    log(
        f"peak RSS on one {pair.rows:,}-row group (batchscore, 4-feature logreg) "
        f"vs {datagen.ROW_GROUP_SIZE:,}-row groups"
    )
    runs = {
        name: run_batchscore(
            [path], pair.model, out_root / "rowgroup" / name, timeout_s, pair.rows, datagen.NARROW_FEATURES
        )
        for name, path in (("one_group", pair.one_group), ("many_groups", pair.many_groups))
    }
    one, many = runs["one_group"], runs["many_groups"]
    growth = (one.peak_rss_mb / many.peak_rss_mb - 1.0) if one.ok and many.ok and many.peak_rss_mb > 0 else None
    log(
        f"  one group {one.peak_rss_mb:7.0f} MB  many groups {many.peak_rss_mb:7.0f} MB  "
        f"growth {'-' if growth is None else f'{growth * 100:+.1f}%'}"
    )
    return {
        "rows": pair.rows,
        "one_group": one.to_dict(),
        "many_groups": many.to_dict(),
        "rss_growth": None if growth is None else round(growth, 4),
    }


DELTA_FLAGS = ("--format", "delta")


def bench_delta(ds: datagen.Dataset, out_root: Path, timeout_s: float, parquet: Measurement | None) -> dict[str, Any]:
    """batchscore writing a Delta table (--format delta, logreg): rate and peak RSS, 1/4 of the files vs all.

    Reported, not checked: the targets above were set for the Parquet output.
    """
    k = max(1, len(ds.files) // 4)
    rows_small, rows_full = sum(ds.file_rows[:k]), sum(ds.file_rows)
    model = ds.models["logreg"]
    log(f"Delta output (batchscore --format delta, logreg): {k} vs {len(ds.files)} files")
    small = run_batchscore(ds.files[:k], model, out_root / "delta" / "small", timeout_s, rows_small, extra=DELTA_FLAGS)
    full = run_batchscore(ds.files, model, out_root / "delta" / "full", timeout_s, rows_full, extra=DELTA_FLAGS)
    growth = (full.peak_rss_mb / small.peak_rss_mb - 1.0) if small.ok and full.ok and small.peak_rss_mb > 0 else None
    same = parquet is not None and parquet.ok and parquet.rows == rows_full
    log(
        f"  {rows_small:,} rows {small.peak_rss_mb:7.0f} MB  {rows_full:,} rows {full.peak_rss_mb:7.0f} MB "
        f"({fmt_rate(full.rows_per_s)} rows/s)  growth {'-' if growth is None else f'{growth * 100:+.1f}%'}"
        + (f"  [Parquet output: {parquet.peak_rss_mb:.0f} MB, {fmt_rate(parquet.rows_per_s)} rows/s]" if same else "")
    )
    return {
        "rows_small": rows_small,
        "rows_full": rows_full,
        "rows_ratio": round(rows_full / rows_small, 3) if rows_small else None,
        "small": small.to_dict(),
        "full": full.to_dict(),
        "rss_growth": None if growth is None else round(growth, 4),
        "parquet_full": parquet.to_dict() if same and parquet is not None else None,
    }


def bench_startup(ds: datagen.Dataset, out_root: Path, timeout_s: float, repeats: int = 5) -> dict[str, Any]:
    """Whole-process wall time (median of ``repeats``, interleaved) of ``import batchscore``,
    ``batchscore inspect MODEL`` and ``batchscore score`` of a 10-row file with the logreg model."""
    import pyarrow.parquet as pq

    tiny = out_root / "startup" / "tiny.parquet"
    tiny.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pq.ParquetFile(ds.files[0]).read_row_group(0).slice(0, 10), tiny, compression="zstd")
    model = ds.models["logreg"]
    score = batchscore_cmd([tiny], model, out_root / "startup" / "out", out_root / "startup" / "report.json")
    cmds = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "import batchscore": [sys.executable, "-c", "import batchscore"],
        "the libraries alone": [sys.executable, "-c", "import numpy, pyarrow, pyarrow.parquet, onnxruntime"],
        "batchscore inspect": [sys.executable, "-m", "batchscore", "inspect", str(model)],
        "batchscore score, 10 rows": score,
    }
    walls: dict[str, list[float]] = {k: [] for k in cmds}
    errors: dict[str, str] = {}
    log("start-up (whole processes):")
    for _ in range(repeats):
        for label, cmd in cmds.items():
            if label in errors:
                continue
            res = run_child(cmd, timeout_s)
            if res.ok:
                walls[label].append(res.wall_s)
            else:
                errors[label] = res.stderr_tail(8)
    medians = {k: (statistics.median(v) if v and k not in errors else None) for k, v in walls.items()}
    for label, val in medians.items():
        log(f"  {label:<26} {'FAILED' if val is None else f'{val:.3f} s'}")
        for line in errors.get(label, "").splitlines():
            log(f"      | {line}")
    shutil.rmtree(out_root / "startup", ignore_errors=True)
    return {
        "python_bare_s": medians["python -c pass"],
        "import_s": medians["import batchscore"],
        "libraries_s": medians["the libraries alone"],
        "inspect_s": medians["batchscore inspect"],
        "score_10_rows_s": medians["batchscore score, 10 rows"],
        "runs_s": {k: [round(w, 4) for w in v] for k, v in walls.items()},
        "error": "\n".join(errors.values()),
    }


# --------------------------------------------------------------------------
# checks and report
# --------------------------------------------------------------------------


def startup_note(startup: dict[str, Any], key: str) -> str:
    """What bounds a start-up time: bare python, and (for a run) importing the libraries every run needs."""
    bare, libs = startup.get("python_bare_s"), startup.get("libraries_s")
    note = "whole process" + ("" if bare is None else f"; bare python {bare:.3f} s")
    if key == "score_10_rows_s" and libs is not None:
        note += f"; importing numpy, pyarrow, pyarrow.parquet and onnxruntime alone {libs:.3f} s"
    return note


def model_checks(case: str, res: dict[str, Any], cpu_us: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """PASS/FAIL records for one case against the targets of the performance issues.

    ``cpu_us``: the model's CPU cost per row of each stage (``stage_cpu``), which bounds the in-run rate.
    """
    c: dict[str, Measurement] = res["contenders"]
    bs, plain, inf = c.get("batchscore"), c.get("plain"), c.get("inference")
    out: list[dict[str, Any]] = []

    def ge(label: str, other: Measurement | None, factor: float) -> None:
        r = ratio(bs, other)
        out.append(
            check(f"{case}: batchscore >= {factor:g}x {label}", f">= {factor:g}", r, None if r is None else r >= factor)
        )

    if case in BEST_PEER_TARGETS:
        factor = BEST_PEER_TARGETS[case]
        r = res.get("best_peer_ratio")
        rounds = res.get("best_peer_ratios") or []
        out.append(
            check(
                f"{case}: batchscore >= {factor:g}x best peer",
                f">= {factor:g}",
                r,
                None if r is None else r >= factor,
                note=f"median of {len(rounds)} rounds: " + ", ".join(f"{x:.2f}" for x in rounds),
            )
        )
    if case == "logreg":
        ge("plain", plain, 2.0)
        rate = bs.internal_rows_per_s if bs is not None and bs.ok else None
        out.append(
            check(
                f"{case}: in-run rate >= {INRUN_LIMIT / 1e6:g}M rows/s",
                f">= {INRUN_LIMIT / 1e6:g}M",
                None if rate is None else rate / 1e6,
                None if rate is None else rate >= INRUN_LIMIT,
                note="rows / the run's own seconds (imports excluded)" + inrun_bound(cpu_us),
            )
        )
    elif case == "logreg_zipmap":
        ge("plain", plain, 4.0)
    elif case != "logreg_2m":
        ge("inference-only", inf, 0.9)
        ge("plain", plain, 1.0)
    cost = summary_cost(res)
    if case == "logreg" and cost is not None:
        out.append(
            check(
                "logreg: run summary costs <= 5% (vs --no-summary)",
                "<= 5%",
                cost,
                cost <= SUMMARY_COST_LIMIT,
                note="median of the rounds' wall times; benchmarks/summary_cost.py measures it finely",
            )
        )
    rss = bs.extra.get("max_peak_rss_mb", bs.peak_rss_mb) if bs is not None and bs.ok else None
    out.append(
        check(
            f"{case}: batchscore peak RSS <= {RSS_LIMIT_MB:g} MB",
            f"<= {RSS_LIMIT_MB:g}",
            rss,
            None if rss is None else rss <= RSS_LIMIT_MB,
        )
    )
    return out


def inrun_bound(cpu_us: dict[str, float] | None) -> str:
    """What this machine's cores can do at the stages' CPU cost per row: all stages, and reading alone."""
    if not cpu_us or not cpu_us.get("read"):
        return ""
    cores = len(os.sched_getaffinity(0))
    total = sum(cpu_us.values())
    return (
        f"; bound on {cores} cores: {fmt_rate(cores * 1e6 / total)} at all stages' {total:.3f} us/row, "
        f"{fmt_rate(cores * 1e6 / cpu_us['read'])} for reading alone ({cpu_us['read']:.3f} us/row)"
    )


def print_model_table(case: str, res: dict[str, Any], stages: dict[str, Measurement]) -> None:
    """Per-case table: contenders (medians of the rounds), rates, RSS and batchscore ratios."""
    c: dict[str, Measurement] = res["contenders"]
    title = f"== {case}: {res['files']} files, {res['rows']:,} rows"
    log()
    log(title + (f"  [{res['note']}]" if res["note"] else ""))
    rows: list[list[str]] = []
    for name in ("inference", *E2E, "no_summary"):
        m = c.get(name)
        if m is None:
            continue
        label = {"inference": "inference-only", "no_summary": "batchscore --no-summary"}.get(name, name)
        if not m.ok:
            rows.append([label, "FAILED", "-", "-", "-", "-"])
            continue
        rounds = m.extra.get("rounds_rows_per_s", [])
        rows.append(
            [
                label,
                fmt_rate(m.rows_per_s),
                fmt_rate(m.internal_rows_per_s) if name in (*E2E, "no_summary") else "",
                f"{m.wall_s:.2f}",
                f"{m.extra.get('max_peak_rss_mb', m.peak_rss_mb):.0f}",
                " ".join(fmt_rate(r) for r in rounds),
            ]
        )
    for name in ("read", "convert", "write"):
        m = stages.get(name)
        if m is not None and m.ok:
            rows.append(
                [f"stage: {name} (all data)", fmt_rate(m.rows_per_s), "", f"{m.wall_s:.2f}", f"{m.peak_rss_mb:.0f}", ""]
            )
    print_table(["contender", "rows/s", "internal rows/s", "wall s", "peak RSS MB", "rounds rows/s"], rows)
    bs = c.get("batchscore")
    ratios = "   ".join(
        f"/ {p} = {fmt_ratio(ratio(bs, c.get(p)))}" for p in ("plain", "polars_read_all", "polars_select")
    )
    best = res.get("best_peer_ratio")
    log(
        f"batchscore {ratios}   / inference-only = {fmt_ratio(ratio(bs, c.get('inference')))}   "
        f"/ best peer (median of rounds) = {fmt_ratio(best)}"
    )
    cost = summary_cost(res)
    if cost is not None:
        log(f"run summary cost: {cost:+.1%} of the run's wall time (batchscore vs batchscore --no-summary)")


def summary_cost(res: dict[str, Any]) -> float | None:
    """1 - rate(batchscore) / rate(batchscore --no-summary): what the run summary costs; None if not measured."""
    r = ratio(res["contenders"].get("batchscore"), res["contenders"].get("no_summary"))
    return None if r is None else 1 - r


def print_checks(checks: list[dict[str, Any]], *, rows: int) -> None:
    """PASS/FAIL summary; below the default size start-up dominates, so the verdicts are only indicative."""
    log()
    log("== targets")
    if rows < DEFAULT_ROWS:
        log(
            f"  (the targets are set for the default {DEFAULT_ROWS:,}-row run; at {rows:,} rows the start-up of each "
            "process weighs on every ratio)"
        )
    for ck in checks:
        val = ck["value"]
        val_s = "-" if val is None else f"{val:.3f}"
        note = f"  ({ck['note']})" if ck["note"] else ""
        log(f"  {'PASS' if ck['pass'] else 'FAIL'}  {ck['name']:<48} {val_s:>9}{note}")
    n_pass = sum(ck["pass"] for ck in checks)
    log(f"  {n_pass}/{len(checks)} targets met")


# --------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="bench.py", description="Benchmark batchscore against plain pyarrow/polars loops.")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK_ROWS:,} rows in {QUICK_FILES} files unless --rows/--files given",
    )
    p.add_argument("--rows", type=int, default=None, help=f"rows to generate (default {DEFAULT_ROWS:,})")
    p.add_argument(
        "--row-group-rows",
        type=int,
        default=None,
        help=f"rows of the one-row-group file (default {ROW_GROUP_ROWS:,}; {QUICK_ROW_GROUP_ROWS:,} with --quick)",
    )
    p.add_argument("--files", type=int, default=None, help=f"number of Parquet files (default {DEFAULT_FILES})")
    p.add_argument(
        "--train-rows",
        type=int,
        default=None,
        help=f"rows the models are trained on (default {datagen.TRAIN_ROWS:,}; {QUICK_TRAIN_ROWS:,} with --quick)",
    )
    p.add_argument(
        "--models",
        default=",".join(datagen.MODEL_NAMES),
        help=f"comma-separated subset of {','.join(datagen.MODEL_NAMES)}",
    )
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the results JSON")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where generated data/models/outputs go")
    p.add_argument(
        "--keep-data",
        action="store_true",
        help="reuse generated data and models from the cache when the parameters match",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help=f"interleaved rounds of the peers and batchscore; medians are reported (default {DEFAULT_ROUNDS}, "
        "1 with --quick)",
    )
    p.add_argument("--no-caps", action="store_true", help="score all rows for every model (ignore per-model caps)")
    p.add_argument(
        "--skip",
        default="",
        help="comma-separated contenders/sections to skip: inference,plain,polars_read_all,polars_select "
        "(polars: both),batchscore,no_summary,stages,flatness,rowgroup,delta,startup,"
        "engines (or one of local,processes,ray,raydata,stage_cpu)",
    )
    p.add_argument("--child-timeout", type=float, default=900.0, help="seconds before a child is killed")
    p.add_argument(
        "--engines", default=",".join(ENGINES), help=f"comma-separated engines to compare: {','.join(ENGINES)}"
    )
    p.add_argument(
        "--engine-models", default=",".join(ENGINE_MODELS), help="models the engines are compared on (empty: none)"
    )
    p.add_argument(
        "--raydata-timeout", type=float, default=300.0, help="seconds before the Ray Data pipeline counts as hung"
    )
    p.add_argument("--strict", action="store_true", help="exit 1 when any target FAILs (CLI only)")
    args = p.parse_args(argv)
    if args.rows is None:
        args.rows = QUICK_ROWS if args.quick else DEFAULT_ROWS
    if args.files is None:
        args.files = QUICK_FILES if args.quick else DEFAULT_FILES
    if args.row_group_rows is None:
        args.row_group_rows = QUICK_ROW_GROUP_ROWS if args.quick else ROW_GROUP_ROWS
    if args.train_rows is None:
        args.train_rows = QUICK_TRAIN_ROWS if args.quick else datagen.TRAIN_ROWS
    if args.rounds is None:
        args.rounds = 1 if args.quick else DEFAULT_ROUNDS
    if args.rows < 1 or args.files < 1 or args.rounds < 1 or args.train_rows < 100:
        p.error("--rows, --files and --rounds must be >= 1 and --train-rows >= 100")
    args.files = min(args.files, args.rows)
    args.model_list = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in args.model_list if m not in datagen.MODEL_NAMES]
    if bad or not args.model_list:
        p.error(f"unknown model(s) {bad}; choose from {','.join(datagen.MODEL_NAMES)}")
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    args.engines = {e.strip() for e in args.engines.split(",") if e.strip()}
    args.engine_model_list = [m.strip() for m in args.engine_models.split(",") if m.strip()]
    bad = [e for e in args.engines if e not in ENGINES]
    bad += [m for m in args.engine_model_list if m not in datagen.MODEL_NAMES]
    if bad:
        p.error(f"unknown engine(s) or model(s) {bad}")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark described by ``argv`` and return the results dict (also written to ``--json``)."""
    args = parse_args(argv)
    t_start = time.perf_counter()
    machine = machine_info()  # before data generation, so the load average reflects other work
    cache_dir: Path = args.cache_dir.resolve()
    params = datagen.DataParams(rows=args.rows, n_files=args.files, train_rows=args.train_rows)
    # logreg is always prepared: start-up and RSS-flatness use it.
    engine_models = [] if "engines" in args.skip else args.engine_model_list
    need_models = list(dict.fromkeys([*args.model_list, *engine_models, "logreg"]))
    ds = datagen.prepare(params, cache_dir, need_models, keep=args.keep_data, log=log)
    compiled_children(cache_dir)
    out_root = ds.root / "out"
    shutil.rmtree(out_root, ignore_errors=True)

    results: dict[str, Any] = {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "params": {
            "rows": args.rows,
            "files": args.files,
            "row_group_size": params.row_group_size,
            "train_rows": params.train_rows,
            "batch_size": 65536,
            "models": args.model_list,
            "quick": args.quick,
            "rounds": args.rounds,
            "row_caps": {} if args.no_caps else MODEL_ROW_CAPS,
            "seed": params.seed,
            "data_dir": str(ds.root),
            "data_reused": ds.reused,
            "generate_seconds": round(ds.generate_seconds, 2),
            "train_seconds": round(ds.train_seconds, 2),
            "rate_definition": "e2e contenders: rows / process wall time (start-up and imports included); "
            "stages and inference-only: rows / timed section",
        },
    }
    data_bytes = sum(f.stat().st_size for f in ds.files)
    results["params"]["data_bytes"] = data_bytes
    load = results["machine"]["loadavg_at_start"]
    ncpu = results["machine"]["cpu_usable"] or 1
    if load is not None and load[0] > 0.5 * ncpu:
        log(f"WARNING: load average {load[0]:.2f} on {ncpu} cores -- other work is running; numbers will be noisy")
    log(f"data: {args.rows:,} rows, {len(ds.files)} files, {data_bytes / 2**20:.0f} MiB on disk")

    stages: dict[str, Measurement] = {}
    if "stages" not in args.skip:
        stages = bench_stages(ds, out_root, args.child_timeout)
    results["stages"] = {k: v.to_dict() for k, v in stages.items()}

    checks: list[dict[str, Any]] = []
    model_results: dict[str, dict[str, Any]] = {}
    cases = list(args.model_list)
    for case, model in EXTRA_CASES.items():  # logreg on fewer rows, where start-up weighs more
        if model in cases and sum(ds.file_rows) > MODEL_ROW_CAPS[case]:
            cases.insert(cases.index(model) + 1, case)
    for case in cases:
        model_results[case] = bench_model(ds, case, out_root, args)

    engine_results = {model: bench_engines(ds, model, out_root, args) for model in engine_models}

    flat: dict[str, Any] | None = None
    if "flatness" not in args.skip and "batchscore" not in args.skip:
        full = model_results.get("logreg", {}).get("contenders", {}).get("batchscore")
        flat = bench_flatness(ds, out_root, args.child_timeout, full)
    row_group: dict[str, Any] | None = None
    if "rowgroup" not in args.skip:
        pair = datagen.prepare_row_groups(
            args.row_group_rows, cache_dir, seed=params.seed, keep=args.keep_data, log=log
        )
        row_group = bench_row_group(pair, out_root, args.child_timeout)
    delta: dict[str, Any] | None = None
    if "delta" not in args.skip and "batchscore" not in args.skip:
        full = model_results.get("logreg", {}).get("contenders", {}).get("batchscore")
        delta = bench_delta(ds, out_root, args.child_timeout, full)
    startup: dict[str, Any] | None = None
    if "startup" not in args.skip:
        startup = bench_startup(ds, out_root, args.child_timeout)

    # ---- report
    for model, res in model_results.items():
        print_model_table(model, res, stages)
        cpu = engine_results.get(model, {}).get("stage_cpu")
        checks.extend(model_checks(model, res, cpu.extra.get("cpu_us_per_row") if cpu is not None and cpu.ok else None))
    if flat is not None:
        g = flat["rss_growth"]
        checks.append(
            check(
                f"peak RSS growth, {flat['rows_ratio']:g}x rows (logreg)",
                f"< {RSS_FLAT_LIMIT:.0%}",
                g,
                None if g is None else abs(g) < RSS_FLAT_LIMIT,
                note=f"{flat['small']['peak_rss_mb']:.0f} -> {flat['full']['peak_rss_mb']:.0f} MB",
            )
        )
    if row_group is not None:
        g = row_group["rss_growth"]
        checks.append(
            check(
                f"peak RSS, one {row_group['rows']:,}-row group vs 128k-row groups",
                f"< {RSS_FLAT_LIMIT:.0%}",
                g,
                None if g is None else g < RSS_FLAT_LIMIT,
                note=f"{row_group['one_group']['peak_rss_mb']:.0f} vs {row_group['many_groups']['peak_rss_mb']:.0f} MB",
            )
        )
    if startup is not None:
        for key, label, limit in (
            ("import_s", "start-up: import batchscore", IMPORT_LIMIT_S),
            ("score_10_rows_s", "start-up: batchscore score, 10 rows", STARTUP_LIMIT_S),
        ):
            s = startup[key]
            checks.append(
                check(
                    label,
                    f"<= {limit:g} s",
                    s,
                    None if s is None else s <= limit,
                    note=startup_note(startup, key),
                )
            )
    for model, engines in engine_results.items():
        print_engine_table(model, engines)
    print_checks(checks, rows=args.rows)

    results["models"] = {
        m: {
            "files": r["files"],
            "rows": r["rows"],
            "note": r["note"],
            "contenders": {k: v.to_dict() for k, v in r["contenders"].items()},
            "ratios": {
                **{
                    f"batchscore/{p}": ratio(r["contenders"].get("batchscore"), r["contenders"].get(p))
                    for p in (*PEERS, "inference")
                },
                "batchscore/best_peer (median of rounds)": r["best_peer_ratio"],
                "batchscore/best_peer by round": r["best_peer_ratios"],
                "summary_cost": summary_cost(r),
            },
        }
        for m, r in model_results.items()
    }
    results["engines"] = {
        model: {name: m.to_dict() for name, m in engines.items()} for model, engines in engine_results.items()
    }
    results["rss_flatness"] = flat
    results["row_group"] = row_group
    results["delta"] = delta
    results["startup"] = startup
    results["checks"] = checks
    results["all_pass"] = all(ck["pass"] for ck in checks)
    results["total_seconds"] = round(time.perf_counter() - t_start, 1)
    with contextlib.suppress(OSError):
        results["machine"]["loadavg_at_end"] = [round(v, 2) for v in os.getloadavg()]

    shutil.rmtree(out_root, ignore_errors=True)
    json_path: Path = args.json
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    log(f"\ntotal {results['total_seconds']:.0f} s; results written to {json_path}")
    return results


def _cli(argv: Sequence[str] | None = None) -> int:
    """Script entry point: exit status 1 only with ``--strict`` and a failed target."""
    strict = parse_args(argv).strict
    res = main(argv)
    return 1 if strict and not res["all_pass"] else 0


if __name__ == "__main__":
    sys.exit(_cli())
