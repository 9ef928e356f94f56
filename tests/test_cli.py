"""The command line as a scheduler sees it: exit codes, one-line errors, nothing half-written."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import (
    FEATURES,
    ROOT,
    cli,
    imputing_feeds,
    imputing_table,
    make_table,
    mixed_table,
    run_feeds,
    write_files,
)

KEEP = "id,segment"


def assert_clean_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    """One line on stderr naming what is wrong, the right exit code, no traceback."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("batchscore: error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0]


def visible_output(out: Path) -> list[str]:
    """What a reader of DIR/*.parquet or DIR/_SUCCESS would see."""
    if not out.exists():
        return []
    return sorted(p.name for p in out.iterdir() if p.suffix == ".parquet" or p.name == "_SUCCESS")


def test_score_succeeds_with_summary(models, dataset, tmp_path):
    dataset(files=2, rows=100)
    result = cli("score", tmp_path / "in", "--model", models["logreg"], "--out", tmp_path / "out", "--keep", KEEP)
    assert result.returncode == 0, result.stderr
    assert "scored 200 rows from 2 file(s)" in result.stdout
    assert "device: CPU" in result.stderr
    assert visible_output(tmp_path / "out") == ["_SUCCESS", "part-00000.parquet", "part-00001.parquet"]


def test_quiet_prints_nothing(models, dataset, tmp_path):
    dataset(files=1, rows=10)
    result = cli("score", tmp_path / "in", "-m", models["logreg"], "-o", tmp_path / "out", "--keep", KEEP, "-q")
    assert result.returncode == 0 and result.stdout == ""
    # -q keeps warnings: features taken in file order are one, since a column swap upstream would reorder them
    assert result.stderr.count("\n") == 1 and "takes every numeric column in file order" in result.stderr
    pinned = ["--features", ",".join(FEATURES), "--mode", "overwrite", "-q"]
    result = cli("score", tmp_path / "in", "-m", models["logreg"], "-o", tmp_path / "out", "--keep", KEEP, *pinned)
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--device", "gpu"], ["device must be one of auto|cpu|cuda", "'gpu'"]),  # bad choice
        (["--batch-size", "0"], ["batch_size must be a positive"]),  # nonsense number
        (["--batch-size", "100000000000"], ["up to 16,777,216, got 100,000,000,000"]),  # a typo, not a MemoryError
        (["--features", "f0,f1", "--keep", "f1"], ["'f1'", "both features and keep"]),  # contradiction
        (["--prediction-col", "id"], ["'id'", "--prediction-col"]),  # output would overwrite a kept column
    ],
)
def test_bad_options_exit_2(models, dataset, tmp_path, extra, needles):
    dataset(files=1, rows=10)
    out = tmp_path / "out"
    result = cli("score", tmp_path / "in", "--model", models["logreg"], "--out", out, "--keep", KEEP, *extra)
    assert_clean_error(result, 2, *needles)
    assert visible_output(out) == []


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (  # unknown flag
            ["score", "in", "-m", "m.onnx", "-o", "out", "--colour", "red"],
            "score: no such option: --colour (possible options: --out); see 'batchscore score --help'",
        ),
        (  # a value of the wrong type
            ["score", "in", "-m", "m.onnx", "-o", "out", "--batch-size", "many"],
            "score: invalid value for '--batch-size': ",
        ),
        (  # missing required option
            ["score", "in", "-m", "m.onnx"],
            "score: missing option '--out' / '-o'; see 'batchscore score --help'",
        ),
        (["run"], "run: missing argument 'JOB'; see 'batchscore run --help'"),  # missing argument
        (["scor", "in"], "no such command 'scor'; did you mean 'score'?; see 'batchscore --help'"),  # unknown command
        (["score", "in", "--on-null"], "option '--on-null' requires an argument"),  # a flag without its value
    ],
)
def test_command_line_errors_are_one_house_line_exit_2(args, line):
    result = cli(*args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [result.stderr.splitlines()[0]]  # one line, no usage block
    assert result.stderr.startswith(f"batchscore: error: {line}")
    as_json = cli(args[0], "--log-format", "json", *args[1:])  # seen even when parsing stops early
    assert as_json.returncode == 2 and len(as_json.stderr.splitlines()) == 1
    error = json.loads(as_json.stderr)
    assert error["level"] == "ERROR" and error["exit_code"] == 2
    assert error["message"].startswith(f"batchscore: error: {line}")


def test_bare_command_shows_the_help_and_exits_2():
    result = cli()
    assert result.returncode == 2 and "Commands:" in result.stderr and "Traceback" not in result.stderr


def _garbage(path: Path) -> Path:
    path.write_bytes(b"this is not parquet\n" * 10)
    return path


def _file_with_column(tmp_path: Path, name: str, array: pa.Array) -> Path:
    table = make_table(20, seed=5)
    table = table.set_column(table.schema.get_field_index(name), name, array)
    return write_files(tmp_path / "bad", [table])[0]


@pytest.mark.parametrize(
    ("case", "extra", "needles"),
    [
        ("missing", [], ["does not exist", "nowhere"]),
        ("garbage", [], ["cannot read Parquet file", "junk.parquet"]),
        ("empty_dir", [], ["holds no *.parquet file"]),
        ("no_match_glob", [], ["matches no file"]),
        ("missing_feature", ["--features", ",".join([*FEATURES[:5], "f17"])], ["'f17' not found in", "part-0.parquet"]),
        ("string_feature", ["--features", ",".join([*FEATURES[:5], "segment"])], ["'segment'", "must be numeric"]),
        ("count", ["--features", ",".join(FEATURES[:5])], ["wants 6 features", "has 5"]),
        ("nulls", [], ["'f3' has 1 null value(s)", "--on-null"]),
        ("duplicate", [], ["dup.parquet has column name(s) 'f1' more than once", "rename the duplicates"]),
        ("filter_type", ["--filter", "segment > 3"], ["cannot be evaluated", "segment is string"]),  # before a row
    ],
)
def test_bad_data_exits_3(models, dataset, tmp_path, case, extra, needles):
    if case == "missing":
        source: Path | str = tmp_path / "nowhere"
    elif case == "garbage":
        source = _garbage(tmp_path / "junk.parquet")
    elif case == "empty_dir":
        source = tmp_path / "empty"
        source.mkdir()
    elif case == "no_match_glob":
        source = str(tmp_path / "*.parquet")
    elif case == "nulls":
        values = [1.0] * 20
        values[7] = None
        source = _file_with_column(tmp_path, "f3", pa.array(values, pa.float64()))
    elif case == "duplicate":
        table = make_table(5)
        source = tmp_path / "dup.parquet"
        pq.write_table(pa.Table.from_arrays(table.columns, names=[*table.column_names[:-1], "f1"]), source)
    else:
        source = dataset(files=1, rows=20)[0]
    keep = [] if "--features" in extra else ["--keep", KEEP]
    out = tmp_path / "out"
    result = cli("score", source, "--model", models["logreg"], "--out", out, *keep, *extra)
    assert_clean_error(result, 3, *needles)
    assert visible_output(out) == []


@pytest.mark.parametrize(
    ("case", "needles"),
    [
        ("missing", ["model file", "does not exist"]),
        ("garbage", ["cannot load ONNX model", "bad.onnx"]),
        ("cuda", ["--device cuda is unavailable", "--device cpu"]),
    ],
)
def test_model_and_device_errors_exit_4(models, dataset, tmp_path, case, needles):
    dataset(files=1, rows=10)
    model: Path = models["logreg"]
    extra = []
    if case == "missing":
        model = tmp_path / "nope.onnx"
    elif case == "garbage":
        model = _garbage(tmp_path / "bad.onnx")
    else:
        import onnxruntime as ort

        try:
            import ctypes

            ctypes.CDLL("libcuda.so.1")
            if "CUDAExecutionProvider" in ort.get_available_providers():
                pytest.skip("a CUDA GPU is present: --device cuda works here")
        except OSError:
            pass
        extra = ["--device", "cuda"]
    result = cli("score", tmp_path / "in", "--model", model, "--out", tmp_path / "out", "--keep", KEEP, *extra)
    assert_clean_error(result, 4, *needles)
    assert visible_output(tmp_path / "out") == []


def test_existing_output_exits_5_and_is_left_alone(models, dataset, tmp_path):
    dataset(files=2, rows=10)
    args = ["score", tmp_path / "in", "--model", models["logreg"], "--out", tmp_path / "out", "--keep", KEEP]
    assert cli(*args).returncode == 0
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
    result = cli(*args)
    assert_clean_error(result, 5, "already holds output", "--mode overwrite")
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()} == before


def test_output_path_is_a_file_exits_5(models, dataset, tmp_path):
    dataset(files=1, rows=10)
    (tmp_path / "out").write_text("x")
    result = cli("score", tmp_path / "in", "--model", models["logreg"], "--out", tmp_path / "out", "--keep", KEEP)
    assert_clean_error(result, 5, "is a file")


@pytest.mark.parametrize(
    ("where", "needle"),
    [
        ("under_a_file", "notes.txt is a file, not a folder"),  # a folder on the path is a file
        ("a_folder", "it is a folder; pass --report with a file name"),
    ],
)
def test_an_unwritable_report_fails_before_the_first_row_and_in_dry_run(models, dataset, tmp_path, where, needle):
    dataset(files=1, rows=10)
    (tmp_path / "notes.txt").write_text("x")
    report = tmp_path / "notes.txt" / "r.json" if where == "under_a_file" else tmp_path / "in"
    out = tmp_path / "out"
    result = cli("score", tmp_path / "in", "-m", models["logreg"], "-o", out, "--keep", KEEP, "--report", report)
    assert_clean_error(result, 5, f"cannot write report {report}", needle)
    assert not out.exists()  # nothing scored, nothing committed: a retry after the fix starts clean
    job = tmp_path / "job.toml"
    job.write_text(
        f'[model]\npath = "{models["logreg"]}"\n[input]\npaths = "in"\nkeep = ["id", "segment"]\n'
        f'[output]\npath = "out"\nreport = "{report}"\n'
    )
    assert_clean_error(cli("run", job, "--dry-run"), 5, f"cannot write report {report}", needle)


def test_overwrite_replaces_old_output(models, dataset, tmp_path):
    dataset(files=3, rows=10)
    base = ["--model", models["logreg"], "--out", tmp_path / "out", "--keep", KEEP]
    assert cli("score", tmp_path / "in", *base).returncode == 0
    (tmp_path / "in" / "part-2.parquet").unlink()
    table = make_table(5, seed=9, start_id=1000)
    pq.write_table(table, tmp_path / "in" / "part-0.parquet")
    result = cli("score", tmp_path / "in", *base, "--mode", "overwrite")
    assert result.returncode == 0, result.stderr
    assert visible_output(tmp_path / "out") == ["_SUCCESS", "part-00000.parquet", "part-00001.parquet"]
    assert pq.read_table(tmp_path / "out" / "part-00000.parquet")["id"].to_pylist() == list(range(1000, 1005))
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith("_staging")] == []


def _corrupt_data_pages(path: Path) -> None:
    """Scribble over the column data but keep the footer, so the failure comes mid-read."""
    data = bytearray(path.read_bytes())
    for i in range(200, len(data) // 2):
        data[i] = 0x5A
    path.write_bytes(bytes(data))


def _nulls_without_statistics(path: Path) -> None:
    table = pq.read_table(path)
    values = table["f1"].to_pylist()
    values[3] = None
    table = table.set_column(table.schema.get_field_index("f1"), "f1", pa.array(values, pa.float64()))
    pq.write_table(table, path, write_statistics=False)


@pytest.mark.parametrize(
    ("break_third", "code", "needle"),
    [
        (_corrupt_data_pages, 3, "part-2.parquet"),  # unreadable data found only while streaming
        (_nulls_without_statistics, 3, "'f1' has 1 null"),  # nulls the footer statistics did not reveal
    ],
)
def test_failure_on_third_file_leaves_nothing_visible(models, tmp_path, break_third, code, needle):
    files = write_files(tmp_path / "in", [make_table(30_000, seed=i) for i in range(4)], row_group_size=5000)
    break_third(files[2])
    out = tmp_path / "out"
    result = cli("score", tmp_path / "in", "--model", models["logreg"], "--out", out, "--keep", KEEP)
    assert_clean_error(result, code, needle)
    assert visible_output(out) == []
    assert not out.exists() or list(out.iterdir()) == []


def test_help_documents_the_contract():
    result = cli("score", "--help")
    assert result.returncode == 0
    for flag in (
        "--model",
        "--out",
        "--features",
        "--keep",
        "--batch-size",
        "--device",
        "--on-null",
        "--fill-value",
        "--prob-format",
        "--prediction-col",
        "--mode",
        "--report",
        "--quiet",
        "--threads",
        "--input",
        "--output",
        "--threshold",
        "--with-score",
    ):
        assert flag in result.stdout
    top = cli("--help")
    # every command's line in the list is a whole sentence, not cut at "Score INPUT..."
    assert "  score    Score Parquet files with a model into an output folder.\n" in top.stdout
    assert "  run      Run a job file (TOML), as cron or Airflow does.\n" in top.stdout
    assert "  inspect  Show a model's inputs and outputs, or a Delta table's versions.\n" in top.stdout
    assert "  report   Show an output's summary and its drift against a reference.\n" in top.stdout
    assert "--install-completion" in top.stdout  # shell completion is on
    assert cli("--version").stdout.startswith("batchscore ")
    assert cli("-V").stdout == cli("--version").stdout


@pytest.mark.parametrize(
    ("command", "usage", "argument"),
    [
        ("score", "Usage: batchscore score [OPTIONS] INPUT...", "  INPUT...  Parquet files"),
        ("run", "Usage: batchscore run [OPTIONS] JOB", "  JOB  The job file"),
        ("inspect", "Usage: batchscore inspect [OPTIONS] MODEL", "  MODEL  The ONNX model file"),
        ("report", "Usage: batchscore report [OPTIONS] OUT", "  OUT  An output folder"),
    ],
)
def test_help_shows_metavars_not_python_types(command, usage, argument):
    text = cli(command, "--help").stdout
    assert text.startswith(usage + "\n") and argument in text
    assert not re.search(r"<(str|int|float|bool|list)", text) and "{" not in text.split("Options:")[0]


def test_the_command_line_starts_without_pydantic_and_with_one_blas_thread(models, dataset, tmp_path):
    """Start-up (issue 15): a whole run parses its options without pydantic (typer 0.29 does, 0.2-0.3 s a
    run), and numpy's OpenBLAS does not spin a thread per core; a user's own OPENBLAS_NUM_THREADS is kept."""
    files = dataset(files=1, rows=10)
    argv = ["batchscore", "score", *map(str, files), "--model", str(models["logreg"]), "--out", str(tmp_path / "o")]
    code = (
        "import os, sys, threadpoolctl\n"
        "from batchscore.cli import main\n"
        f"sys.argv = {[*argv, '--keep', 'id', '--mode', 'overwrite', '--quiet']!r}\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
        "print(code, 'pydantic' in sys.modules, [i['num_threads'] for i in threadpoolctl.threadpool_info()"
        " if i['internal_api'] == 'openblas'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["0", "False", "[1]"], run.stderr
    env["OPENBLAS_NUM_THREADS"] = "2"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["0", "False", "[2]"], run.stderr


def test_shell_completion_completes_commands_and_choices():
    def complete(words: str) -> list[str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "_BATCHSCORE_COMPLETE": "complete_bash"}
        env |= {"COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}
        command = [sys.executable, "-c", "from batchscore.cli import main; main()"]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    assert complete("batchscore sc") == ["score"]
    assert complete("batchscore score data --on-null ") == ["error", "fill", "skip"]


def test_inspect_shows_model_and_mapping(models, dataset, tmp_path):
    dataset(files=2, rows=10)
    result = cli("inspect", models["logreg_zipmap"])
    assert result.returncode == 0, result.stderr
    assert "X: tensor(float) [N, 6]" in result.stdout
    assert "output_probability: tensor(float) [N, 3]" in result.stdout
    assert "class_labels: [0, 1, 2]" in result.stdout
    assert "zipmap_removed: True" in result.stdout
    assert "sha256: " in result.stdout and "ai.onnx.ml: 1" in result.stdout
    mapped = cli("inspect", models["logreg"], "--data", tmp_path / "in", "--keep", KEEP)
    assert mapped.returncode == 0, mapped.stderr
    assert "features: " + ", ".join(FEATURES) in mapped.stdout
    assert "keep: id, segment" in mapped.stdout
    bad = cli("inspect", models["logreg"], "--data", tmp_path / "in")
    assert_clean_error(bad, 3, "wants 6 features", "id, f0", "'id' look(s) like ids: pass --keep id")


def test_a_2000_column_table_gives_one_short_error_line(models, tmp_path):
    import numpy as np

    zeros = pa.array(np.zeros(3))
    pq.write_table(pa.table({f"c{i:04d}": zeros for i in range(2000)}), tmp_path / "wide.parquet")
    result = cli("inspect", models["logreg"], "--data", tmp_path / "wide.parquet")
    assert_clean_error(result, 3, "wants 6 features, but the data has 2000 numeric feature columns", "... 1992 more")
    assert len(result.stderr) < 600


NIGHTLY = ROOT / "jobs" / "nightly_example.toml"


def test_run_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    out = tmp_path / "scores"
    result = cli("run", NIGHTLY, "--ds", "2026-11-19", "--set", f"output.path={out}", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "data/demo/ds=2026-11-19/part-0.parquet (51,000 rows)" in result.stdout
    assert "(matches the pin)" in result.stdout
    assert "action: score 1 file(s) into 1 part(s)" in result.stdout
    assert f"output: {out} (mode resume, zstd)" in result.stdout
    assert not out.exists()


def test_run_dry_run_reports_what_a_resume_would_refuse(models, dataset, tmp_path):
    dataset(files=1, rows=10)
    job = tmp_path / "job.toml"
    job.write_text(
        f'[model]\npath = "{models["logreg"]}"\n[input]\npaths = "in"\nkeep = ["id"]\n[output]\npath = "out"\n'
    )
    assert cli("run", job).returncode == 0
    result = cli("run", job, "--set", "output.mode=resume", "--set", "output.prob_format=list", "--dry-run")
    assert_clean_error(result, 5, "cannot resume", "pass --mode overwrite")


def test_run_refuses_a_model_that_is_not_the_pinned_one(tmp_path):
    out = tmp_path / "scores"
    result = cli(
        "run", NIGHTLY, "--ds", "2026-11-19", "--set", f"output.path={out}", "--set", f"model.sha256={'0' * 64}"
    )
    assert_clean_error(result, 4, "data/demo/model.onnx has sha256 e8cfbd19", f"pins {'0' * 64}", "approved model")
    assert not out.exists()


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("[output]\npath = 'o'\nmod = 'overwrite'\n", ["unknown key 'output.mod'", "did you mean 'mode'"]),  # typo
        ("[run]\nbatch_size = '10'\n", ["'run.batch_size' must be an integer"]),  # wrong type
        ("[model]\npath = 'm.onnx'\n", ["missing required key(s) 'input.paths', 'output.path'"]),  # incomplete
        ("# r\u00e9sum\u00e9 in Latin-1\n[model]\n", ["not UTF-8 text (byte 0xe9 at offset 3)", "save it as UTF-8"]),
    ],
)
def test_run_bad_job_file_exits_2_naming_file_and_key(tmp_path, text, needles):
    job = tmp_path / "bad.toml"
    job.write_bytes(text.encode("latin-1"))
    assert_clean_error(cli("run", job), 2, str(job), *needles)


def test_json_logs_are_one_object_per_line(models, dataset, tmp_path):
    dataset(files=1, rows=10)
    args = ["score", tmp_path / "in", "-m", models["logreg"], "-o", tmp_path / "out", "--keep", KEEP]
    result = cli(*args, "--log-format", "json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert lines and {"time", "level", "logger", "message"} <= set(lines[0])
    assert any(line["message"].startswith("committed 1 part(s)") for line in lines)
    assert json.loads(result.stdout)["rows_written"] == 10

    failed = cli(*args, "--log-format", "json")
    assert failed.returncode == 5 and "Traceback" not in failed.stderr
    error = json.loads(failed.stderr.splitlines()[-1])
    assert error["level"] == "ERROR" and error["exit_code"] == 5 and "already holds output" in error["message"]


def test_inspect_shows_each_input_with_its_columns(mixed_model, tmp_path):
    table = mixed_table(10).rename_columns(["id", "income", "age", "town", "emb"])
    write_files(tmp_path / "in", [table])
    result = cli("inspect", mixed_model, "--data", tmp_path / "in", "--input", "city=town", "--keep", "id")
    assert result.returncode == 0, result.stderr
    assert "  inputs:\n    income: tensor(float) [N, 1] <- income (double)\n" in result.stdout
    assert (
        "    age: tensor(int64) [N, 1] <- age (int32)\n    city: tensor(string) [N, 1] <- town (string)"
        in result.stdout
    )
    assert "  rows_per_call: any" in result.stdout
    missing = cli("inspect", mixed_model, "--data", tmp_path / "in")
    assert_clean_error(missing, 3, "model input(s) 'city' have no column of the same name", "--input NAME=COLUMN")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--input", "city"], "--input 'city' is not NAME=VALUE"),  # no '='
        (["--output", "prediction=a", "--output", "prediction=b"], "--output names 'prediction' twice"),
        (["--threshold", "1.5"], "threshold must be a probability between 0 and 1"),
    ],
)
def test_bad_mapping_flags_exit_2(models, dataset, tmp_path, extra, needle):
    dataset(files=1, rows=10)
    result = cli(
        "score", tmp_path / "in", "--model", models["logreg"], "--out", tmp_path / "out", "--keep", KEEP, *extra
    )
    assert_clean_error(result, 2, needle)


def test_sigterm_cleans_up_and_exits_143(models, tmp_path):
    """Airflow and systemd stop a task with SIGTERM: the run must clean its staging and commit nothing."""
    write_files(tmp_path / "in", [make_table(2000, seed=i, start_id=i * 2000) for i in range(12)], row_group_size=500)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "batchscore", "score", tmp_path / "in", "--model", models["logreg"]]
    command += ["--out", out, "--keep", KEEP, "--batch-size", "8", "-q"]
    proc = subprocess.Popen(
        list(map(str, command)), stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if list(out.glob("_batchscore/*/*.staged")):
            break  # scoring: at least one part is being written
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert "terminated (SIGTERM); nothing was committed" in stderr
    assert "Traceback" not in stderr
    assert visible_output(out) == []
    assert not (out / "_batchscore").exists()


def test_nulls_into_a_model_that_imputes_them(imputing_model, tmp_path):
    """skl2onnx's SimpleImputer is trained to replace NaN: nulls must reach it as NaN, never silently as 0."""
    import numpy as np

    table = imputing_table(200, seed=8)
    pq.write_table(table, tmp_path / "in.parquet")
    nulls = table["a"].null_count
    base = ["score", tmp_path / "in.parquet", "-m", imputing_model, "--keep", "id"]
    refused = cli(*base, "-o", tmp_path / "refused")
    assert refused.returncode == 3 and "Traceback" not in refused.stderr
    assert refused.stderr.splitlines()[-1] == (
        f"batchscore: error: feature column 'a' has {nulls} null value(s) in {tmp_path / 'in.parquet'}; "
        "model input 'a' imputes missing values itself (an Imputer node reads it): "
        "pass --on-null fill and they reach it as NaN"
    )
    filled = cli(*base, "-o", tmp_path / "nan", "--on-null", "fill")
    assert filled.returncode == 0, filled.stderr
    got = pq.read_table(tmp_path / "nan")
    labels, probs = run_feeds(imputing_model, imputing_feeds(table, np.nan))
    assert got["prediction"].to_pylist() == labels.tolist()
    np.testing.assert_array_equal(got["prob_1"].to_numpy(), probs[:, 1])
    zero = cli(*base, "-o", tmp_path / "zero", "--on-null", "fill", "--fill-value", "0")  # asked for: done, with a word
    assert zero.returncode == 0, zero.stderr
    assert "model input 'a' imputes missing values itself, but --fill-value 0.0 replaces nulls" in zero.stderr
    _, zero_probs = run_feeds(imputing_model, imputing_feeds(table, 0.0))
    np.testing.assert_array_equal(pq.read_table(tmp_path / "zero")["prob_1"].to_numpy(), zero_probs[:, 1])
    assert not np.array_equal(zero_probs, probs)
