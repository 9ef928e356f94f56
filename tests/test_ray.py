"""--engine ray on a real local Ray cluster, started once for this module: the local engine's output, its errors.

The driver is this test process (already connected, so the engine joins its
cluster) or a ``batchscore`` subprocess given the cluster's address.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import ROOT, assert_same_output, bad_age_files, hive_dataset, make_table, mixed_table, write_files
from test_cli import assert_clean_error, cli, visible_output

import batchscore
from batchscore import tasks
from batchscore.errors import SchemaMismatchError

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.xdist_group("ray")]

KEEP = ("id", "segment")


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """One local Ray cluster of 2 CPUs for the module; its address, for drivers in other processes."""
    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING, configure_logging=False
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def run(inputs: Path, model: Path, out: Path, **options: object) -> batchscore.RunReport:
    spec = batchscore.JobSpec(inputs=(str(inputs),), model=str(model), out=str(out), **options)  # type: ignore[arg-type]
    return batchscore.run(spec)


def test_ray_engine_gives_the_local_output(cluster, models, mixed_model, tmp_path, monkeypatch):
    """Several files (one cut into pieces), hive folders and a multi-input model, on 2 actors each."""
    cases: list[tuple[str, Path, dict[str, object]]] = []
    files = [make_table(1500, seed=i, start_id=i * 1500) for i in range(5)] + [make_table(6000, seed=9, start_id=7500)]
    write_files(tmp_path / "files", files, row_group_size=500)
    cases.append(("files", models["logreg"], {"keep": KEEP, "filter": "f0 > -1"}))
    hive_dataset(tmp_path / "hive")
    # A tree ensemble sums its trees in parallel: the last bit of a probability follows the thread count, the
    # same on every engine, so both runs get one thread per model.
    hive = {"keep": ("id", "ds", "region"), "partition_by": ("region",), "threads": 1}
    cases.append(("hive", models["forest"], hive))
    write_files(tmp_path / "multi", [mixed_table(800, seed=i) for i in range(3)], row_group_size=300)
    cases.append(("multi", mixed_model, {"keep": ("id",)}))
    monkeypatch.setattr(tasks, "TASK_BYTES", 60_000)  # the 6000-row file goes in pieces, the others whole
    for name, model, options in cases:
        local = run(tmp_path / name, model, tmp_path / f"{name}-local", **options)
        spread = run(tmp_path / name, model, tmp_path / f"{name}-ray", engine="ray", workers=2, **options)
        assert_same_output(tmp_path / f"{name}-ray", tmp_path / f"{name}-local")
        assert spread.rows_written == local.rows_written and spread.engine == "ray"
    assert any("-000.parquet" in p.name for p in (tmp_path / "files-ray").iterdir())


def test_rows_keep_input_order_and_each_actor_loads_the_model_once(cluster, models, tmp_path):
    write_files(tmp_path / "in", [make_table(400, seed=i, start_id=i * 400) for i in range(8)], row_group_size=100)
    seen: list[batchscore.Progress] = []
    spec = batchscore.JobSpec(
        inputs=(str(tmp_path / "in"),), model=str(models["mlp"]), out=str(tmp_path / "out"), keep=KEEP, engine="ray"
    )
    report = batchscore.run(spec.replace(workers=2, batch_size=100), progress=seen.append)
    assert seen[-1].rows == seen[-1].total_rows == 3200 and len(seen) > 2  # rows from every actor, as they come
    ids = pq.read_table(tmp_path / "out")["id"].to_pylist()  # parts in name order
    assert ids == list(range(8 * 400))
    assert len(report.workers) == 2 and len({w["pid"] for w in report.workers}) == 2
    assert [w["model_loads"] for w in report.workers] == [1, 1]  # 8 tasks, 2 loads
    assert sum(w["tasks"] for w in report.workers) == 8 and sum(w["rows"] for w in report.workers) == 3200


def test_a_worker_error_comes_back_as_itself_through_ray(cluster, mixed_model, tmp_path):
    bad_age_files(tmp_path / "in")
    with pytest.raises(SchemaMismatchError) as local:
        run(tmp_path / "in", mixed_model, tmp_path / "local", keep=("id",))
    with pytest.raises(SchemaMismatchError) as spread:
        run(tmp_path / "in", mixed_model, tmp_path / "out", keep=("id",), engine="ray", workers=2)
    assert type(spread.value) is type(local.value) and str(spread.value) == str(local.value)
    assert spread.value.exit_code == 3 and "part-3.parquet" in str(spread.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cli_on_a_cluster_exits_3_with_one_line_and_commits_nothing(cluster, mixed_model, tmp_path):
    bad_age_files(tmp_path / "in")
    out = tmp_path / "out"
    args = ["-m", mixed_model, "-o", out, "--keep", "id", "--engine", "ray", "--ray-address", cluster, "-q"]
    result = cli("score", tmp_path / "in", *args)
    assert_clean_error(result, 3, "column 'age'", "not whole numbers", "part-3.parquet")
    assert visible_output(out) == []


@pytest.mark.slow
def test_killed_driver_then_resume_equals_a_clean_run(cluster, models, tmp_path):
    files = 12
    tables = [make_table(2000, seed=i, start_id=i * 2000) for i in range(files)]
    write_files(tmp_path / "in", tables, row_group_size=500)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "batchscore", "score", tmp_path / "in", "--model", models["logreg"], "--out", out]
    command += ["--keep", ",".join(KEEP), "--mode", "resume", "--batch-size", "16", "-q"]
    command += ["--engine", "ray", "--workers", "2", "--ray-address", cluster]
    proc = subprocess.Popen(list(map(str, command)), env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if list(out.glob("_batchscore/*/part-*.json")):  # a part is written, synced and recorded
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(out.glob("_batchscore/*/part-*.json")))
    assert 1 <= done < files, "the run finished before it was killed: make it slower"
    assert not (out / "_SUCCESS").exists()

    report = run(tmp_path / "in", models["logreg"], out, keep=KEEP, mode="resume", engine="ray", workers=2)
    assert report.parts_skipped >= done  # the dead run's recorded parts are adopted
    run(tmp_path / "in", models["logreg"], tmp_path / "clean", keep=KEEP)
    assert_same_output(out, tmp_path / "clean")
