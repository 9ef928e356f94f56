"""The ``batchscore`` command line: parse, build a JobSpec, call the library, map errors to exit codes.

Exit codes: 0 ok; 2 usage or bad option; 3 input missing, unreadable or not
fitting the model; 4 model unreadable or device unavailable; 5 output exists or
cannot be written; 6 drift over the limits with on_drift=fail (output committed);
1 an unexpected bug (the only case with a traceback); 130/143 interrupted.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from signal import SIGTERM
from typing import Annotated, Any

import typer
from typer._click import Context
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError  # Typer vendors Click
from typer.core import TyperArgument, TyperCommand

from batchscore import _blas, _interrupt, pipeline  # noqa: F401  (_blas first: before numpy)
from batchscore._version import __version__
from batchscore.errors import BatchScoreError, JobSpecError
from batchscore.jobfile import load_job
from batchscore.report import Progress, ProgressCallback
from batchscore.spec import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_NULL_RATE_CHANGE,
    DEFAULT_MAX_PSI,
    JobSpec,
    parse_assignments,
    split_columns,
)

log = logging.getLogger("batchscore")

app = typer.Typer(
    name="batchscore",
    help="Score Parquet files with an ONNX model into Parquet: fast, atomic, CPU or GPU.",
    epilog=(
        "Exit codes: 0 ok; 2 usage, bad option or job file; 3 input missing, unreadable or not fitting the model; "
        "4 model unreadable, pin mismatch or device unavailable; 5 output exists, locked or not writable; "
        "6 drift over the limits with --on-drift fail (output committed); "
        "1 a bug (the only case with a traceback); 130/143 interrupted, nothing committed."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

LOG_INTERVAL_S = 10.0


class _Argument(TyperArgument):
    """A positional argument shown as its metavar alone: ``INPUT...`` and ``JOB``, not ``{INPUT}... <list[str]>``."""

    def _shown(self) -> str:
        return (self.metavar or (self.name or "").upper()) + ("..." if self.nargs != 1 else "")

    def make_metavar(self, ctx: Context, *, usage: bool = False) -> str:
        return self._shown() if self.required or not usage else f"[{self._shown()}]"

    # typer 0.29 asks these instead (constraints.txt pins 0.28: 0.29 parses options through pydantic, 0.3 s a run)
    def display_type_rich(self, ctx: Context) -> str | None:
        return None

    def _rich_display_name(self) -> str:
        return self._shown()

    def _usage_display_name(self) -> str:
        return self._shown() if self.required else f"[{self._shown()}]"


class _Command(TyperCommand):
    """A Typer command whose positional arguments show their metavars only."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if type(param) is TyperArgument:
                param.__class__ = _Argument


Inputs = Annotated[
    list[str],
    typer.Argument(metavar="INPUT", help="Parquet files, directories or globs (one or more).", show_default=False),
]
ModelPath = Annotated[
    str, typer.Option("--model", "-m", metavar="PATH", help="The ONNX model file.", show_default=False)
]
Features = Annotated[
    str | None,
    typer.Option(
        metavar="COLS",
        help="Comma-separated feature columns in the model's order. Default: every numeric column not kept.",
    ),
]
Keep = Annotated[
    str | None,
    typer.Option(
        metavar="COLS", help="Comma-separated passthrough columns (ids). Default: every column that is not a feature."
    ),
]
InputMap = Annotated[
    list[str] | None,
    typer.Option(
        "--input",
        metavar="NAME=COL[,COL...]",
        help="Feed model input NAME from these columns (repeatable). Default: the column named like the input.",
    ),
]
OutputMap = Annotated[
    list[str] | None,
    typer.Option(
        "--output",
        metavar="NAME=COLUMN",
        help="Keep only these outputs, renamed (repeatable); NAME: a default column (prediction, prob_<label>, "
        "score) or a model output.",
    ),
]
Threshold = Annotated[
    float | None,
    typer.Option(
        metavar="P", help="Binary classifiers: predict the positive (second) class when its probability >= P."
    ),
]
WithScore = Annotated[bool, typer.Option("--with-score", help="Add a score column: the predicted class's probability.")]


def _choices(metavar: str) -> Callable[[], list[str]]:
    """Shell completion for an option whose metavar lists its values (``error|fill|skip``)."""
    return lambda: metavar.split("|")


def _choice(values: str, *decls: str, help: str) -> Any:
    """An option taking one of ``values`` (``error|fill|skip``): shown as its metavar, completed by the shell."""
    return typer.Option(*decls, metavar=values, autocompletion=_choices(values), help=help)


OnNull = Annotated[
    str,
    _choice("error|fill|skip", help="What to do with nulls in feature columns."),
]
Device = Annotated[str, _choice("auto|cpu|cuda", help="Where to run the model.")]
Threads = Annotated[int | None, typer.Option(metavar="N", help="onnxruntime threads. Default: one per available core.")]
BatchSize = Annotated[
    int,
    typer.Option(
        metavar="N", help="Rows per batch (on the CPU, scored in calls of at most 16384 rows; on the GPU in one call)."
    ),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Only errors; no progress and no summary.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")]
StorageOptions = Annotated[
    list[str] | None,
    typer.Option(
        "--storage-option",
        metavar="KEY=VALUE",
        help="Object-store setting for every s3://, gs:// or abfs:// path (repeatable), by pyarrow's name: "
        "endpoint_override=HOST:PORT, scheme=http, region=..., anonymous=true, retry_strategy=standard:5.",
    ),
]
LogFormat = Annotated[
    str,
    _choice("text|json", help="Log lines as text, or as JSON objects (for log collectors)."),
]
Reference = Annotated[
    str | None,
    typer.Option(
        metavar="PATH",
        help="Compare this run's data and predictions with an earlier output folder or saved summary "
        "(PSI, null rates, categories); a missing one is a warning.",
    ),
]
MaxPsi = Annotated[
    float | None,
    typer.Option(metavar="X", help=f"Drift: a column whose PSI exceeds X (default {DEFAULT_MAX_PSI:g}) has drifted."),
]
MaxNullRateChange = Annotated[
    float | None,
    typer.Option(
        metavar="X",
        help=f"Drift: a null rate moving by more than X (default {DEFAULT_MAX_NULL_RATE_CHANGE:g} = 10 points).",
    ),
]
OnDrift = Annotated[
    str | None,
    _choice("warn|fail", help="Drift over the limits: log a warning (default), or exit 6 after committing."),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"batchscore {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", "-V", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Score Parquet files with an ONNX model into Parquet: fast, atomic, CPU or GPU."""


@app.command(cls=_Command, short_help="Score Parquet files with a model into an output folder.")
def score(
    inputs: Inputs,
    model: ModelPath,
    out: Annotated[str, typer.Option("--out", "-o", metavar="DIR", help="Output directory.", show_default=False)],
    features: Features = None,
    keep: Keep = None,
    input_columns: InputMap = None,
    output_columns: OutputMap = None,
    threshold: Threshold = None,
    with_score: WithScore = False,
    batch_size: BatchSize = DEFAULT_BATCH_SIZE,
    device: Device = "auto",
    threads: Threads = None,
    on_null: OnNull = "error",
    fill_value: Annotated[
        float | None,
        typer.Option(
            metavar="X",
            help="Value for nulls with --on-null fill (nan allowed). Default: NaN for inputs the model imputes "
            "itself (an Imputer reads them), 0 otherwise.",
        ),
    ] = None,
    filter: Annotated[
        str | None, typer.Option(metavar="SQL", help="SQL condition on input columns; only matching rows are scored.")
    ] = None,
    prob_format: Annotated[
        str,
        _choice(
            "columns|list",
            help="Probabilities as prob_<label> columns or one list column.",
        ),
    ] = "columns",
    prediction_col: Annotated[str, typer.Option(metavar="NAME", help="Name of the prediction column.")] = "prediction",
    mode: Annotated[
        str,
        _choice(
            "error|overwrite|resume",
            help="If DIR already holds output: fail, replace it, or keep the parts already scored for these inputs.",
        ),
    ] = "error",
    compression: Annotated[
        str,
        _choice(
            "zstd|snappy|gzip|lz4|brotli|none",
            help="Parquet compression.",
        ),
    ] = "zstd",
    format: Annotated[
        str,
        _choice(
            "parquet|delta",
            "--format",
            help="parquet: DIR/part-*.parquet and _SUCCESS; delta: one commit to the Delta Lake table --out "
            "(pip install 'batchscore[delta]').",
        ),
    ] = "parquet",
    schema_mode: Annotated[
        str,
        _choice(
            "strict|merge",
            help="Delta: refuse output whose columns differ from the table's (strict), or add new columns (merge).",
        ),
    ] = "strict",
    partition_by: Annotated[
        str | None,
        typer.Option(metavar="COLS", help="Comma-separated output columns to split into hive folders DIR/col=value/."),
    ] = None,
    model_sha256: Annotated[
        str | None,
        typer.Option(metavar="HEX", help="Refuse (exit 4) any model file whose sha256 differs from this one."),
    ] = None,
    report: Annotated[str | None, typer.Option(metavar="FILE", help="Write a JSON run report to this file.")] = None,
    storage_options: StorageOptions = None,
    reference: Reference = None,
    max_psi: MaxPsi = None,
    max_null_rate_change: MaxNullRateChange = None,
    on_drift: OnDrift = None,
    summary: Annotated[
        bool, typer.Option("--summary/--no-summary", help="Write DIR/_batchscore_summary.json (per-column statistics).")
    ] = True,
    engine: Annotated[
        str,
        typer.Option(
            metavar="local|processes|ray",
            help="Who scores: this process, worker processes on this machine, or Ray actors (same output).",
        ),
    ] = "local",
    workers: Annotated[
        int | None,
        typer.Option(
            metavar="N", help="Worker processes or Ray actors. Default: one per core (per CPU or GPU of the cluster)."
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            metavar="ADDR",
            help="Ray cluster to join: auto, HOST:PORT or ray://HOST:10001. Default: RAY_ADDRESS, or a local one.",
        ),
    ] = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
    log_format: LogFormat = "text",
) -> None:
    """Score INPUT... with the model into --out DIR (part-NNNNN.parquet, then _SUCCESS)."""
    _setup_logging(quiet=quiet, verbose=verbose, log_format=log_format)
    with _Errors(log_format=log_format):
        spec = JobSpec(
            inputs=tuple(inputs),
            model=model,
            out=out,
            features=split_columns(features),
            keep=split_columns(keep),
            batch_size=batch_size,
            device=device,  # type: ignore[arg-type]  # validated by JobSpec
            threads=threads,
            on_null=on_null,  # type: ignore[arg-type]
            fill_value=fill_value,
            filter=filter,
            prob_format=prob_format,  # type: ignore[arg-type]
            prediction_col=prediction_col,
            input_columns=_input_map(input_columns),
            output_columns=parse_assignments(output_columns, flag="--output"),
            threshold=threshold,
            with_score=with_score,
            mode=mode,  # type: ignore[arg-type]
            compression=compression,  # type: ignore[arg-type]
            format=format,  # type: ignore[arg-type]
            schema_mode=schema_mode,  # type: ignore[arg-type]
            partition_by=split_columns(partition_by),
            model_sha256=model_sha256,
            report=report,
            storage_options=parse_assignments(storage_options, flag="--storage-option"),
            summary=summary,
            **_drift_options(reference, max_psi, max_null_rate_change, on_drift),
            engine=engine,  # type: ignore[arg-type]
            workers=workers,
            ray_address=ray_address,
        )
        _score(spec, quiet=quiet, log_format=log_format)


@app.command("run", cls=_Command, short_help="Run a job file (TOML), as cron or Airflow does.")
def run_job(
    job: Annotated[str, typer.Argument(metavar="JOB", help="The job file, a TOML file (see jobs/).")],
    ds: Annotated[
        str | None,
        typer.Option(
            metavar="YYYY-MM-DD", help="The date for {ds}, {ds_nodash} and {yesterday_ds} in paths. Default: today."
        ),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="SECTION.KEY=VALUE",
            help="Override a key of the job file, e.g. --set output.mode=overwrite (value read as TOML). Repeatable.",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Check inputs, model, pin, mapping and output; print the plan; score nothing."),
    ] = False,
    reference: Reference = None,
    max_psi: MaxPsi = None,
    max_null_rate_change: MaxNullRateChange = None,
    on_drift: OnDrift = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
    log_format: LogFormat = "text",
) -> None:
    """Run the job declared in the TOML file JOB. Relative paths in it resolve against the job file's folder."""
    _setup_logging(quiet=quiet, verbose=verbose, log_format=log_format)
    with _Errors(log_format=log_format):
        spec = load_job(job, ds=ds, overrides=overrides or ())
        drift_flags = _drift_options(reference, max_psi, max_null_rate_change, on_drift)
        if drift_flags:  # the flags win over the job file's [drift] keys
            spec = spec.replace(**drift_flags)
        if dry_run:
            plan = pipeline.dry_run(spec)
            typer.echo(json.dumps(plan, indent=2) if log_format == "json" else _render(plan))
            return
        _score(spec, quiet=quiet, log_format=log_format)


def _drift_options(
    reference: str | None, max_psi: float | None, max_null_rate_change: float | None, on_drift: str | None
) -> dict[str, Any]:
    """The drift flags that were given, as JobSpec fields."""
    given = {
        "reference": reference,
        "max_psi": max_psi,
        "max_null_rate_change": max_null_rate_change,
        "on_drift": on_drift,
    }
    return {k: v for k, v in given.items() if v is not None}


def _input_map(values: list[str] | None) -> dict[str, tuple[str, ...]]:
    """``--input NAME=COL[,COL...]`` flags as input name -> columns."""
    return {name: split_columns(cols) or () for name, cols in parse_assignments(values, flag="--input").items()}


def _score(spec: JobSpec, *, quiet: bool, log_format: str) -> None:
    with _Progress(quiet=quiet, bar=log_format == "text") as progress:
        result = pipeline.run(spec, progress=progress)
    if quiet:
        return
    if log_format == "json":
        keys = ("run_id", "output", "rows_read", "rows_written", "rows_null_output", "parts_skipped", "seconds")
        typer.echo(json.dumps({"event": "summary", **{k: getattr(result, k) for k in keys}}))
        return
    nulls = f", {result.rows_null_output} null prediction(s)" if result.rows_null_output else ""
    skipped = f", {result.parts_skipped} part(s) already there" if result.parts_skipped else ""
    files = len(result.files) - result.parts_skipped
    typer.echo(
        f"scored {result.rows_written:,} rows from {files} file(s) in {result.seconds:.1f} s "
        f"({result.rows_per_s:,.0f} rows/s, {result.provider}){nulls}{skipped} -> {result.output}"
    )


@app.command(cls=_Command, short_help="Show a model's inputs and outputs, or a Delta table's versions.")
def inspect(
    model: Annotated[
        str, typer.Argument(metavar="MODEL", help="The ONNX model file, or a Delta table to show its history.")
    ],
    data: Annotated[
        list[str] | None,
        typer.Option(metavar="INPUT", help="Parquet input(s) to dry-run the column mapping against (repeatable)."),
    ] = None,
    features: Features = None,
    keep: Keep = None,
    input_columns: InputMap = None,
    output_columns: OutputMap = None,
    threshold: Threshold = None,
    with_score: WithScore = False,
    on_null: OnNull = "error",
    device: Device = "cpu",
    storage_options: StorageOptions = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Show the model's inputs, outputs, class labels, opsets, size and sha256; with --data, the mapping.

    Given a Delta table written with --format delta: its versions, newest first (date, rows, model, run).
    """
    _setup_logging(quiet=True, verbose=False, log_format="text")
    with _Errors(log_format="text"):
        options = parse_assignments(storage_options, flag="--storage-option")
        if _is_delta_table(model, options):
            from batchscore import deltalog

            table = deltalog.describe(model, storage_options=options)
            typer.echo(json.dumps(table, indent=2) if as_json else deltalog.render_history(table))
            return
        spec = JobSpec(
            inputs=tuple(data or ["-"]),
            model=model,
            out="-",
            features=split_columns(features),
            keep=split_columns(keep),
            input_columns=_input_map(input_columns),
            output_columns=parse_assignments(output_columns, flag="--output"),
            threshold=threshold,
            with_score=with_score,
            on_null=on_null,  # type: ignore[arg-type]
            device=device,  # type: ignore[arg-type]
            storage_options=options,
        )
        if data:
            ready = pipeline.prepare(spec)
            info = {**ready.model.describe(), "mapping": ready.describe_mapping()}
        else:
            from batchscore.model import Model

            info = Model(model, device=spec.device, storage_options=spec.storage_options).describe()
    typer.echo(json.dumps(info, indent=2) if as_json else _render(info))


@app.command("report", cls=_Command, short_help="Show an output's summary and its drift against a reference.")
def report_command(
    out: Annotated[str, typer.Argument(metavar="OUT", help="An output folder, or a saved _batchscore_summary.json.")],
    reference: Annotated[
        str | None,
        typer.Option(
            metavar="REF",
            help="Compare with this output folder or saved summary. Default: the run's own reference.",
        ),
    ] = None,
    html: Annotated[
        str | None,
        typer.Option(metavar="FILE", help="Also write a self-contained HTML page (needs batchscore[report])."),
    ] = None,
    max_psi: MaxPsi = None,
    max_null_rate_change: MaxNullRateChange = None,
    storage_options: StorageOptions = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Show an output's data and prediction summary and its drift against a reference (worst columns first).

    OUT, REF and the --html FILE may be object-store URIs (s3://, gs://, abfs://), set up by --storage-option.
    """
    _setup_logging(quiet=True, verbose=False, log_format="text")
    with _Errors(log_format="text"):
        from batchscore import drift, htmlreport, textreport

        options = parse_assignments(storage_options, flag="--storage-option")
        review = drift.review(
            out, reference=reference, max_psi=max_psi, max_null_rate_change=max_null_rate_change, options=options
        )
        if html:
            htmlreport.write(html, review, options=options)
    if as_json:
        data = {
            "summary": review.current.summary.describe(),
            "lineage": review.current.lineage,
            "drift": None if review.drift is None else review.drift.to_dict(),
        }
        typer.echo(json.dumps(data, indent=2))
    else:
        typer.echo(textreport.render(review))
    if html:
        typer.echo(f"wrote {html}", err=True)


def _is_delta_table(path: str, options: dict[str, str]) -> bool:
    """A folder with a ``_delta_log``, local or on a store: ``inspect`` shows the table's history (no deltalake
    import otherwise)."""
    if path.endswith(".onnx"):
        return False
    from batchscore import storage

    try:
        return storage.resolve(path, options).child("_delta_log").is_dir()
    except OSError:
        return False  # reading it as a model says what is wrong with the store


def _render(info: dict[str, Any], indent: str = "") -> str:
    lines = []
    for key, value in info.items():
        if isinstance(value, list) and value and key != "class_labels" and not indent:
            lines.append(f"{key}:")
            lines += [f"  {v}" for v in value]
        elif isinstance(value, dict):
            lines.append(f"{indent}{key}:")
            lines.append(_render(value, indent + "  "))
        elif isinstance(value, list) and indent:
            lines.append(f"{indent}{key}: {', '.join(map(str, value))}")
        else:
            lines.append(f"{indent}{key}: {value}")
    return "\n".join(lines)


class _Errors:
    """Turn BatchScoreError into one line on stderr and its exit code; interrupts into 130/143."""

    def __init__(self, *, log_format: str) -> None:
        self.log_format = log_format

    def __enter__(self) -> None:
        _interrupt.install()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, BatchScoreError):
            self._say(f"batchscore: error: {exc}", exc.exit_code)
        if isinstance(exc, KeyboardInterrupt) or (isinstance(exc, _interrupt.Interrupted) and exc.signum != SIGTERM):
            self._say("batchscore: interrupted; nothing was committed (mode resume keeps finished parts)", 130)
        if isinstance(exc, _interrupt.Interrupted) and exc.signum == SIGTERM:
            self._say("batchscore: terminated (SIGTERM); nothing was committed (mode resume keeps finished parts)", 143)

    def _say(self, message: str, code: int) -> None:
        if self.log_format == "json":
            line = {"time": _now(), "level": "ERROR", "logger": "batchscore", "message": message, "exit_code": code}
            typer.echo(json.dumps(line), err=True)
        else:
            typer.echo(message, err=True)
        raise typer.Exit(code)


def _setup_logging(*, quiet: bool, verbose: bool, log_format: str) -> None:
    if log_format not in ("text", "json"):
        typer.echo(f"batchscore: error: --log-format must be one of text|json, got {log_format!r}", err=True)
        raise typer.Exit(JobSpecError.exit_code)
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    # numpy, pyarrow and onnxruntime warnings become log lines in the run's format, never raw stderr text
    logging.captureWarnings(True)
    warned = logging.getLogger("py.warnings")
    warned.handlers[:] = [handler]
    warned.propagate = False


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the traceback, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": _now(record.created), "level": record.levelname, "logger": record.name}
        line["message"] = record.getMessage()
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def _now(created: float | None = None) -> str:
    moment = datetime.fromtimestamp(created, UTC) if created is not None else datetime.now(UTC)
    return moment.isoformat(timespec="milliseconds")


class _Progress:
    """A tqdm bar on a terminal; a log line every 10 s otherwise (cron, Airflow, JSON logs); nothing when quiet."""

    def __init__(self, *, quiet: bool, bar: bool = True) -> None:
        self.quiet = quiet
        self.use_bar = bar
        self.bar: Any = None
        self.redirect: Any = None
        self.last_log = 0.0
        self.started = 0.0

    def __enter__(self) -> ProgressCallback | None:
        if self.quiet:
            return None
        self.started = self.last_log = time.monotonic()
        if self.use_bar and sys.stderr.isatty():
            return self._bar
        return self._log

    def _bar(self, p: Progress) -> None:
        if self.bar is None:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self.bar = tqdm(total=p.total_rows, unit="rows", unit_scale=True, dynamic_ncols=True, file=sys.stderr)
            self.redirect = logging_redirect_tqdm(loggers=[log])
            self.redirect.__enter__()
        self.bar.update(p.rows - self.bar.n)
        self.bar.set_postfix_str(f"files {p.files_done}/{p.total_files}", refresh=False)

    def _log(self, p: Progress) -> None:
        now = time.monotonic()
        if now - self.last_log < LOG_INTERVAL_S:
            return
        self.last_log = now
        rate = p.rows / max(now - self.started, 1e-9)
        pct = 100 * p.rows / p.total_rows if p.total_rows else 100.0
        log.info(
            "progress: %s/%s rows (%.0f%%), %d/%d files, %s rows/s",
            f"{p.rows:,}",
            f"{p.total_rows:,}",
            pct,
            p.files_done,
            p.total_files,
            f"{rate:,.0f}",
        )

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
            self.redirect.__exit__(None, None, None)


def main(argv: list[str] | None = None) -> None:
    """The command line on ``argv`` (default: ``sys.argv[1:]``), ending in ``SystemExit`` with the exit code.

    The console script runs it through :func:`entry`. Click's errors (unknown flag or command, bad or
    missing value) become the house one-line ``batchscore: error: ...`` (a JSON object under
    ``--log-format json``), exit 2.
    """
    args = sys.argv[1:] if argv is None else argv
    try:
        code = app(args=args, prog_name="batchscore", standalone_mode=False)
    except NoArgsIsHelpError as exc:  # bare `batchscore`: the help, as before
        exc.show()
        code = exc.exit_code
    except ClickException as exc:
        try:
            _Errors(log_format=_log_format(args))._say(_usage_message(exc), exc.exit_code)
        except typer.Exit as done:
            code = done.exit_code
    status = code if isinstance(code, int) else 0
    sys.exit(status)


def _usage_message(exc: ClickException) -> str:
    """``batchscore: error: score: no such option: --colour; see 'batchscore score --help'``: one line."""
    sentences = re.split(r"(?<=[.?!])\s+", " ".join(exc.format_message().split()))
    text = "; ".join(t.rstrip(".")[:1].lower() + t.rstrip(".")[1:] for t in sentences if t)
    text = re.sub(r"\(([A-Z])", lambda m: "(" + m.group(1).lower(), text)  # "(Possible options: ...)"
    ctx = exc.ctx if isinstance(exc, UsageError) else None
    if ctx is None:
        return f"batchscore: error: {text}"
    command = ctx.command_path
    where = command.removeprefix("batchscore").strip()
    return f"batchscore: error: {where + ': ' if where else ''}{text}; see '{command} --help'"


def _log_format(args: list[str]) -> str:
    """The ``--log-format`` value in raw arguments (text unless json), for errors found before they are parsed."""
    for i, arg in enumerate(args):
        if arg == "--log-format" and i + 1 < len(args):
            return "json" if args[i + 1] == "json" else "text"
        if arg.startswith("--log-format="):
            return "json" if arg.partition("=")[2] == "json" else "text"
    return "text"


def entry() -> None:
    """The ``batchscore`` console script and ``python -m batchscore``: :func:`main` in a process of its own.

    The process ends at once when :func:`main` is done (:func:`_exit_now`), skipping the
    interpreter's teardown, which has nothing left to do: the commit, the report and the
    logs are written. The teardown costs 0.05 s of a 0.3 s run of a small file, and can
    crash: onnxruntime's and pyarrow's native objects are destroyed in no set order while
    their thread pools wind down (a SIGTERM'd run once exited -11 instead of 143;
    onnxruntime#7207), and with deltalake loaded it can abort (exit 134, "terminate called
    without an active exception", delta-rs#2184): a scheduler would read a failed night. A native
    crash during the run itself prints the Python stacks (faulthandler) before the exit.
    """
    with contextlib.suppress(AttributeError, OSError, ValueError):  # no real stderr (a test runner's capture)
        faulthandler.enable()
    try:
        main()
    except SystemExit as done:  # main always ends so, with the exit code
        _exit_now(done.code)


def _exit_now(code: int | str | None) -> None:
    """End the process at once, its output flushed, so that the exit code is the one meant (see :func:`entry`)."""
    if isinstance(code, str):
        typer.echo(code, err=True)
    status = code if isinstance(code, int) else (0 if code is None else 1)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)
