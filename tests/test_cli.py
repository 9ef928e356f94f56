"""The command line as a scheduler sees it: exit codes, one-line errors, nothing half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import FEATURES, ROOT, make_table, mixed_table, write_files

KEEP = "id,segment"


def cli(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchscore", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


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


def test_unknown_flag_is_usage_error(models, tmp_path):
    result = cli("score", tmp_path, "--model", models["logreg"], "--out", tmp_path / "o", "--colour", "red")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "--colour" in result.stderr


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
    assert "score" in top.stdout and "inspect" in top.stdout
    assert cli("--version").stdout.startswith("batchscore ")


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
    ],
)
def test_run_bad_job_file_exits_2_naming_file_and_key(tmp_path, text, needles):
    job = tmp_path / "bad.toml"
    job.write_text(text)
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
