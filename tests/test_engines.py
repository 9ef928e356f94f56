"""The task seam and the processes engine: the same output as the local engine, the same errors, resumable.

Ray has its own module (test_ray.py, one cluster for all its tests); the processes
engine spawns real worker processes here.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import (
    ROOT,
    assert_same_output,
    bad_age_files,
    hive_dataset,
    make_table,
    mixed_table,
    write_files,
)
from test_cli import assert_clean_error, cli, visible_output

import batchscore
from batchscore import tasks
from batchscore.errors import JobSpecError, SchemaMismatchError
from batchscore.reader import resolve_inputs, scan

KEEP = ("id", "segment")


def run(inputs: Path, model: Path, out: Path, **options: object) -> batchscore.RunReport:
    spec = batchscore.JobSpec(inputs=(str(inputs),), model=str(model), out=str(out), **options)  # type: ignore[arg-type]
    return batchscore.run(spec)


def test_plan_tasks_cuts_only_files_over_the_limit_into_row_group_pieces(tmp_path):
    write_files(tmp_path / "in", [make_table(1000, seed=1), make_table(50, seed=2)], row_group_size=200)
    files = scan(resolve_inputs([str(tmp_path / "in")]))
    assert [(t.index, t.piece, t.rows) for t in tasks.plan_tasks(files, [0, 1])] == [(0, None, 1000), (1, None, 50)]
    limit = files[1].size + 1  # the small file stays whole; the big one has 5 row groups
    planned = tasks.plan_tasks(files, [0, 1], task_bytes=limit)
    pieces = [t for t in planned if t.index == 0]
    assert len(pieces) > 1 and [t.piece for t in pieces] == list(range(len(pieces)))
    assert all(t.pieces == len(pieces) for t in pieces)
    assert [g for t in pieces for g in t.row_groups or ()] == [0, 1, 2, 3, 4]  # every row group once, in order
    assert sum(t.rows for t in pieces) == 1000
    assert planned[-1] == tasks.Task(1, rows=50)


def test_a_split_file_gives_pieces_whose_rows_are_the_file_in_order(models, tmp_path, monkeypatch):
    write_files(tmp_path / "in", [make_table(3000, seed=i, start_id=i * 3000) for i in range(2)], row_group_size=500)
    whole = run(tmp_path / "in", models["logreg"], tmp_path / "whole", keep=KEEP)
    monkeypatch.setattr(tasks, "TASK_BYTES", 20_000)
    split = run(tmp_path / "in", models["logreg"], tmp_path / "split", keep=KEEP, mode="resume")
    names = sorted(p.name for p in (tmp_path / "split").glob("*.parquet"))
    assert names[:2] == ["part-00000-000.parquet", "part-00000-001.parquet"] and len(names) > 2
    assert pq.read_table(tmp_path / "split").equals(pq.read_table(tmp_path / "whole"))  # sorted names: input order
    entries = json.loads((tmp_path / "split" / "_batchscore.json").read_text())["parts"]
    assert [e["index"] for e in entries] == [0, 1]  # one manifest part per input file, listing its pieces
    assert sum(len(e["files"]) for e in entries) == len(names)
    assert [e["rows"] for e in entries] == [3000, 3000] and split.rows_written == whole.rows_written


@pytest.mark.slow
@pytest.mark.parametrize(
    "case",
    [
        "files",  # several files, a classifier, keep columns, a filter
        "hive",  # hive folders become columns, and partitioned output
        "multi_input",  # a ColumnTransformer model: three typed inputs from three columns
        "pieces",  # a file cut into row-group pieces, some pieces on each worker
    ],
)
def test_processes_engine_gives_the_local_output(models, mixed_model, tmp_path, monkeypatch, case):
    inputs, model = tmp_path / "in", models["logreg"]
    options: dict[str, object] = {"keep": KEEP}
    if case == "files":
        write_files(inputs, [make_table(1500, seed=i, start_id=i * 1500) for i in range(5)], row_group_size=400)
        options["filter"] = "f0 > -1"
    elif case == "hive":
        hive_dataset(inputs)
        options = {"keep": ("id", "ds", "region"), "partition_by": ("region",)}
    elif case == "multi_input":
        write_files(inputs, [mixed_table(800, seed=i) for i in range(3)], row_group_size=300)
        model, options = mixed_model, {"keep": ("id",)}
    else:
        write_files(inputs, [make_table(4000, seed=i, start_id=i * 4000) for i in range(2)], row_group_size=500)
        monkeypatch.setattr(tasks, "TASK_BYTES", 30_000)
    local = run(inputs, model, tmp_path / "local", **options)
    seen: list[batchscore.Progress] = []
    out, where = str(tmp_path / "processes"), (str(inputs),)
    spec = batchscore.JobSpec(inputs=where, model=str(model), out=out, engine="processes", workers=2, **options)
    spread = batchscore.run(spec, progress=seen.append)
    # the bar and the log lines: rows from every worker, batch by batch, up to the total
    assert (seen[-1].rows, seen[-1].total_rows) == (spread.rows_written, spread.rows_read)
    assert len({p.rows for p in seen}) > len(spread.workers) and seen[-1].files_done == seen[-1].total_files
    assert_same_output(tmp_path / "processes", tmp_path / "local")
    # issue 11's summary, merged from the workers' part summaries: the same but for the quantile sketches, whose
    # compaction is random (two local runs differ there too)
    summaries = [json.loads((tmp_path / o / "_batchscore_summary.json").read_text()) for o in ("processes", "local")]
    for key in ("rows", "features", "outputs", "coverage"):
        assert _without_sketches(summaries[0][key]) == _without_sketches(summaries[1][key]), key
    assert (spread.rows_written, spread.rows_filtered) == (local.rows_written, local.rows_filtered)
    assert spread.engine == "processes" and len(spread.workers) == 2
    assert [w["model_loads"] for w in spread.workers] == [1, 1]  # once per worker, however many tasks
    files = scan(resolve_inputs([str(inputs)]))
    assert sum(w["tasks"] for w in spread.workers) == len(tasks.plan_tasks(files, range(len(files))))


def test_a_worker_error_is_the_same_error_and_commits_nothing(mixed_model, tmp_path):
    bad_age_files(tmp_path / "in")
    with pytest.raises(SchemaMismatchError) as local:
        run(tmp_path / "in", mixed_model, tmp_path / "local", keep=("id",))
    with pytest.raises(SchemaMismatchError) as spread:
        run(tmp_path / "in", mixed_model, tmp_path / "out", keep=("id",), engine="processes", workers=2)
    assert type(spread.value) is type(local.value) and str(spread.value) == str(local.value)
    assert "not whole numbers" in str(spread.value) and "part-3.parquet" in str(spread.value)
    assert not (tmp_path / "out").exists()  # nothing committed; the folder the run created is gone


@pytest.mark.slow
def test_cli_worker_error_exits_3_with_one_line(mixed_model, tmp_path):
    bad_age_files(tmp_path / "in")
    out = tmp_path / "out"
    result = cli("score", tmp_path / "in", "-m", mixed_model, "-o", out, "--keep", "id", "--engine", "processes")
    assert_clean_error(result, 3, "column 'age'", "not whole numbers", "part-3.parquet")
    assert visible_output(out) == []


@pytest.mark.slow
def test_killed_driver_stops_its_workers_and_resume_equals_a_clean_run(models, tmp_path):
    files = 12
    tables = [make_table(2000, seed=i, start_id=i * 2000) for i in range(files)]
    write_files(tmp_path / "in", tables, row_group_size=500)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "batchscore", "score", tmp_path / "in", "--model", models["logreg"], "--out", out]
    command += ["--keep", ",".join(KEEP), "--mode", "resume", "--batch-size", "8", "-q", "--engine", "processes"]
    command += ["--workers", "2"]
    proc = subprocess.Popen(list(map(str, command)), env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if list(out.glob("_batchscore/*/part-*.json")):  # a part is written, synced and recorded
            break
        time.sleep(0.01)
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert workers, "no worker process found"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers), "workers outlived their driver"
    done = len(list(out.glob("_batchscore/*/part-*.json")))
    assert 1 <= done < files and not (out / "_SUCCESS").exists()

    report = run(tmp_path / "in", models["logreg"], out, keep=KEEP, mode="resume", engine="processes", workers=2)
    assert report.parts_skipped >= done  # the dead run's recorded parts are adopted
    run(tmp_path / "in", models["logreg"], tmp_path / "clean", keep=KEEP)
    assert_same_output(out, tmp_path / "clean")


@pytest.mark.slow
def test_a_killed_worker_fails_the_run_with_exit_7_and_commits_nothing(models, tmp_path):
    tables = [make_table(2000, seed=i, start_id=i * 2000) for i in range(8)]
    write_files(tmp_path / "in", tables, row_group_size=500)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "batchscore", "score", tmp_path / "in", "--model", models["logreg"], "--out", out]
    command += ["--keep", ",".join(KEEP), "--batch-size", "8", "--engine", "processes", "--workers", "2", "-q"]
    proc = subprocess.Popen(
        list(map(str, command)), env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not list(out.glob("_batchscore/*/*.staged")):
        time.sleep(0.01)  # a worker is writing its first part
    workers = [pid for pid in _children(proc.pid) if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert workers, "no worker process found"
    os.kill(workers[0], signal.SIGKILL)  # what the OOM killer does
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 7, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("batchscore: error:")]
    assert len(errors) == 1 and f"worker process {workers[0]} died (signal 9)" in errors[0], stderr
    assert "Traceback" not in stderr and visible_output(out) == []


def _without_sketches(value: object) -> object:
    if isinstance(value, dict):
        return {k: _without_sketches(v) for k, v in value.items() if k != "sketch"}
    return value


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"engine": "spark"}, "engine must be one of local|processes|ray"),  # Spark is a function, not an engine
        ({"workers": 2}, "needs engine processes or ray"),  # the local engine is one process
        ({"engine": "processes", "workers": 0}, "workers must be at least 1"),
        ({"ray_address": "auto"}, "ray_address 'auto' needs engine ray"),
        ({"engine": "processes", "format": "delta"}, "format delta needs engine local"),  # one writer, one commit
    ],
)
def test_engine_options_are_checked(changes, needle):
    with pytest.raises(JobSpecError, match=needle):
        batchscore.JobSpec(inputs=("in",), model="m.onnx", out="out", **changes)


def test_engine_options_are_job_file_keys(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text(
        '[model]\npath = "m.onnx"\n[input]\npaths = "in"\n[output]\npath = "out"\n'
        '[run]\nengine = "ray"\nworkers = 3\nray_address = "ray://head:10001"\n'
    )
    spec = batchscore.load_job(str(job))
    assert (spec.engine, spec.workers, spec.ray_address) == ("ray", 3, "ray://head:10001")
    assert batchscore.load_job(str(job), overrides=["run.workers=5"]).workers == 5


def test_an_unreachable_ray_cluster_fails_at_once_with_exit_7(models, dataset, tmp_path):
    pytest.importorskip("ray")
    dataset(files=1, rows=10)
    with socket.socket() as probe:  # a free port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "out"
    args = ["--keep", ",".join(KEEP), "--engine", "ray", "--ray-address", f"127.0.0.1:{port}"]
    result = cli("score", tmp_path / "in", "-m", models["logreg"], "-o", out, *args)
    assert_clean_error(result, 7, f"cannot reach the Ray cluster at 127.0.0.1:{port}", "--ray-address")
    assert visible_output(out) == []


def test_missing_ray_is_one_line_naming_the_extra(models, dataset, tmp_path, monkeypatch):
    dataset(files=1, rows=10)
    monkeypatch.setitem(sys.modules, "ray", None)  # what an install without the extra looks like to `import ray`
    with pytest.raises(JobSpecError, match=r"pip install 'batchscore\[ray\]'"):
        run(tmp_path / "in", models["logreg"], tmp_path / "out", keep=KEEP, engine="ray")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_processes_engine_on_an_object_store(s3, models, tmp_path):
    """Workers read the inputs and the model from S3 and stage their parts there, with the run's store options."""
    write_files(tmp_path / "lake", [make_table(500, seed=i, start_id=i * 500) for i in range(3)], row_group_size=200)
    s3.upload(tmp_path / "lake", "lake")
    s3.put("models/logreg.onnx", Path(models["logreg"]).read_bytes())
    base = batchscore.JobSpec(
        inputs=(s3.uri("lake"),),
        model=s3.uri("models/logreg.onnx"),
        out=s3.uri("local"),
        keep=KEEP,
        storage_options=s3.server.options(),
    )
    batchscore.run(base)
    report = batchscore.run(base.replace(out=s3.uri("processes"), engine="processes", workers=2))
    assert report.rows_written == 1500 and [w["model_loads"] for w in report.workers] == [1, 1]
    names = [k for k in s3.keys("processes") if k.endswith(".parquet")]
    assert names == [k for k in s3.keys("local") if k.endswith(".parquet")]
    assert names == [f"part-0000{i}.parquet" for i in range(3)]
    for name in names:
        got, want = (pq.read_table(s3.path(o, name), filesystem=s3.fs) for o in ("processes", "local"))
        assert got.replace_schema_metadata(None).equals(want.replace_schema_metadata(None))
    assert "_SUCCESS" in s3.keys("processes") and not [k for k in s3.keys("processes") if k.startswith("_batchscore/")]
