"""End to end on S3 (moto's server on 127.0.0.1): inputs, model, output, report and lock all in a bucket.

The local guarantees hold there too: parity with onnxruntime, hive folders and globs, nothing visible after
a failure, kill -9 then resume equals a clean run, one run at a time, stale locks taken over, and every store
error is one line with its exit code.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import FEATURES, ROOT, cli, direct_run, make_table, one_line_error, write_files

import batchscore
from batchscore import _objectlock, storage

KEEP = ("id", "segment")


def read_scores(s3, prefix: str) -> pa.Table:
    """What a reader globbing PREFIX/*.parquet sees, in part order."""
    fs = s3.fs
    parts = sorted(f.path for f in fs.get_file_info(pa.fs.FileSelector(s3.path(prefix))) if f.path.endswith(".parquet"))
    return pa.concat_tables([pq.read_table(p, filesystem=fs) for p in parts])


@pytest.fixture
def lake(s3, tmp_path, models):
    """Two days of events in hive folders and the model, uploaded to the bucket."""
    for day in (19, 20):
        tables = [make_table(300, seed=day * 10 + i, start_id=day * 1000 + i * 300) for i in range(2)]
        write_files(tmp_path / "lake" / "events" / f"ds=2026-11-{day}", tables, row_group_size=100)
    s3.upload(tmp_path / "lake", "lake")
    s3.put("models/logreg.onnx", Path(models["logreg"]).read_bytes())
    return s3


def spec(s3, *, out: str = "scores", **changes: object) -> batchscore.JobSpec:
    base = batchscore.JobSpec(
        inputs=(s3.uri("lake/events"),),
        model=s3.uri("models/logreg.onnx"),
        out=s3.uri(out),
        keep=(*KEEP, "ds"),
        storage_options=s3.server.options(),
    )
    return base.replace(**changes)


def test_scores_match_onnxruntime_from_hive_folders_and_globs(lake, models):
    glob = lake.uri("lake/events/ds=2026-11-*/*.parquet")
    result = cli(
        "score", glob, "--model", lake.uri("models/logreg.onnx"), "--out", lake.uri("scores"),
        "--keep", "id,segment,ds", "--report", lake.uri("reports/run.json"), *lake.server.cli_options(), "-q",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    keys = lake.keys("scores")
    assert [k for k in keys if k.endswith(".parquet")] == [f"part-0000{i}.parquet" for i in range(4)]
    assert {"_SUCCESS", "_batchscore.json"} <= set(keys)
    assert not [k for k in keys if k.startswith("_batchscore/") or k == "_batchscore.lock"]  # work area and lock gone
    scores = read_scores(lake, "scores")
    names = [f"lake/events/ds=2026-11-{d}/part-{i}.parquet" for d in (19, 20) for i in (0, 1)]
    inputs = pa.concat_tables([pq.read_table(lake.path(name), filesystem=lake.fs) for name in names])
    x = np.column_stack([inputs[c].to_numpy() for c in FEATURES]).astype(np.float32)
    labels, probabilities = direct_run(models["logreg"], x)
    assert scores["id"].to_pylist() == inputs["id"].to_pylist()
    days = [date(2026, 11, 19)] * 600 + [date(2026, 11, 20)] * 600  # hive folders became a date column
    assert scores["ds"].to_pylist() == days  # hive folders became a column
    assert scores["prediction"].to_pylist() == labels.tolist()
    np.testing.assert_allclose(scores["prob_0"].to_numpy(), probabilities[:, 0], rtol=1e-6)
    report = json.loads(lake.get("reports/run.json"))
    assert report["rows_written"] == 1200 and report["output"] == lake.uri("scores")
    manifest = json.loads(lake.get("scores/_batchscore.json"))
    assert manifest["complete"] and all(p["input"].startswith("s3://") for p in manifest["parts"])
    assert manifest["spec"]["storage_options"] == lake.server.options()  # no secret among them to hide


def test_secrets_never_reach_the_manifest(lake):
    options = {**lake.server.options(), "access_key": "testing", "secret_key": "testing"}
    batchscore.run(spec(lake, storage_options=options))
    written = json.loads(lake.get("scores/_batchscore.json"))["spec"]["storage_options"]
    assert written["secret_key"] == "<hidden>" and written["access_key"] == "<hidden>"


def test_failure_at_file_3_leaves_nothing_visible(lake, tmp_path):
    bad = make_table(300, seed=3)
    bad = bad.set_column(bad.schema.get_field_index("f0"), "f0", pa.array([1e300] * 300))  # overflows float32
    write_files(tmp_path / "bad", [bad])
    lake.put("lake/events/ds=2026-11-21/part-0.parquet", (tmp_path / "bad" / "part-0.parquet").read_bytes())
    with pytest.raises(batchscore.InputDataError, match="too large for model input"):
        batchscore.run(spec(lake, batch_size=100))
    assert [k for k in lake.keys("scores") if not k.startswith("_batchscore")] == []
    assert "_batchscore.lock" not in lake.keys("scores")


@pytest.mark.slow
def test_kill_9_then_resume_equals_a_clean_run(lake, tmp_path):
    for i in range(10):  # more, slower files: the run must be killed half way
        write_files(tmp_path / "more", [make_table(2000, seed=50 + i, start_id=10_000 + i * 2000)], row_group_size=500)
        lake.put(f"lake/events/ds=2026-11-22/part-{i}.parquet", (tmp_path / "more" / "part-0.parquet").read_bytes())
    command = [sys.executable, "-m", "batchscore", "score", lake.uri("lake/events"), "--model"]
    command += [lake.uri("models/logreg.onnx"), "--out", lake.uri("scores"), "--keep", "id,segment,ds"]
    command += ["--mode", "resume", "--batch-size", "8", "-q", *lake.server.cli_options()]
    proc = subprocess.Popen(list(map(str, command)), env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        if any(k.startswith("_batchscore/") and "/part-" in k and k.endswith(".json") for k in lake.keys("scores")):
            break  # a part is written and recorded
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = lake.keys("scores")
    assert not [k for k in left if k.endswith(".parquet")] and "_SUCCESS" not in left, left
    assert "_batchscore.lock" in left  # a dead run's lock: same host, no such process, taken over at once

    resumed = batchscore.run(spec(lake, mode="resume", batch_size=8))
    assert resumed.parts_skipped >= 1, "the run finished nothing before it was killed"
    batchscore.run(spec(lake, out="clean", batch_size=8))
    assert read_scores(lake, "scores").equals(read_scores(lake, "clean"))
    assert "_batchscore.lock" not in lake.keys("scores") and "_SUCCESS" in lake.keys("scores")


def test_a_second_run_is_refused_while_the_first_holds_the_lock(lake):
    where = storage.resolve(lake.uri("scores/_batchscore.lock"), lake.server.options())
    with _objectlock.ObjectStoreLock(where, run_id="nightly-1"):  # a live run (this process)
        result = cli(
            "score", lake.uri("lake/events"), "--model", lake.uri("models/logreg.onnx"), "--out", lake.uri("scores"),
            "--keep", "id,segment", *lake.server.cli_options(),
        )  # fmt: skip
        line = one_line_error(result, 5)
        assert f"is being written by another run (pid {os.getpid()} on {platform.node()}, run nightly-1" in line
    assert lake.keys("scores") == []


def test_a_stale_lock_is_taken_over(lake, caplog):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    now = datetime.now(UTC).isoformat()
    owner = {"pid": proc.pid, "host": platform.node(), "run_id": "dead", "since": now, "heartbeat": now}
    lake.put("scores/_batchscore.lock", json.dumps(owner).encode())
    caplog.set_level("INFO", logger="batchscore")
    batchscore.run(spec(lake))
    assert f"took over the lock of a run that is gone (pid {proc.pid}" in caplog.text
    assert "_SUCCESS" in lake.keys("scores") and "_batchscore.lock" not in lake.keys("scores")


@pytest.mark.parametrize(
    ("where", "code", "needle"),
    [
        ("input", 3, "bucket 'no-such-bucket' does not exist"),
        ("model", 4, "model 's3://no-such-bucket/m.onnx' does not exist"),
        ("out", 5, "bucket 'no-such-bucket' does not exist"),
        ("endpoint", 3, "cannot reach the storage endpoint; check endpoint_override"),
    ],
)
def test_store_errors_are_one_line_with_their_exit_code(lake, where, code, needle):
    missing = "s3://no-such-bucket"
    inputs = f"{missing}/events" if where == "input" else lake.uri("lake/events")
    model = f"{missing}/m.onnx" if where == "model" else lake.uri("models/logreg.onnx")
    out = f"{missing}/scores" if where == "out" else lake.uri("scores")
    options = lake.server.cli_options()
    if where == "endpoint":
        options = ["--storage-option", "endpoint_override=127.0.0.1:9", "--storage-option", "scheme=http"]
        options += ["--storage-option", "retry_strategy=standard:1"]
    line = one_line_error(cli("score", inputs, "--model", model, "--out", out, "--keep", "id,segment", *options), code)
    assert needle in line


def test_airflow_style_chain_then_polars_reads_both_days(lake, tmp_path):
    job = tmp_path / "jobs" / "nightly.toml"
    job.parent.mkdir()
    job.write_text(
        f"""
[model]
path = "{lake.uri("models/logreg.onnx")}"
[input]
paths = ["{lake.uri("lake/events/ds={ds}")}"]
keep = ["id", "segment"]
[output]
path = "{lake.uri("nightly/ds={ds}")}"
mode = "resume"
[storage]
endpoint_override = "{lake.server.host_port}"
scheme = "http"
"""
    )
    for ds in ("2026-11-19", "2026-11-20"):
        result = cli("run", job, "--ds", ds, "--log-format", "json")
        assert result.returncode == 0, result.stderr
    again = cli("run", job, "--ds", "2026-11-20", "--log-format", "json")  # a retried task: nothing to do
    assert again.returncode == 0 and '"parts_skipped": 2' in again.stdout
    import polars as pl

    options = {
        "aws_endpoint_url": lake.server.endpoint,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "aws_region": "us-east-1",
        "aws_allow_http": "true",
    }
    summary = (
        pl.scan_parquet(lake.uri("nightly/*/*.parquet"), storage_options=options, hive_partitioning=True)
        .group_by("ds")
        .agg(pl.len().alias("n"))
        .sort("ds")
        .collect()
    )
    assert summary.rows() == [(date(2026, 11, 19), 600), (date(2026, 11, 20), 600)]  # Polars types ds as a date


def test_inspect_a_model_in_a_bucket(lake, models):
    import hashlib

    result = cli("inspect", lake.uri("models/logreg.onnx"), "--json", *lake.server.cli_options())
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["sha256"] == hashlib.sha256(Path(models["logreg"]).read_bytes()).hexdigest()
    assert info["path"] == lake.uri("models/logreg.onnx")
