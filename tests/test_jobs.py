"""Every file in jobs/ is run: the demo job, the nightly example, the Airflow DAG and the README's cron line."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import ROOT

import batchscore
from batchscore.model import file_sha256

JOBS = ROOT / "jobs"
BIN = Path(sys.executable).parent
DEMO_ROWS = {"2026-11-17": 48_000, "2026-11-18": 52_000, "2026-11-19": 51_000, "2026-11-20": 49_000}


def shell(command: str, *, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("path", sorted(JOBS.glob("*.toml")), ids=lambda p: p.name)
def test_every_job_file_loads(path):
    spec = batchscore.load_job(str(path), ds="2026-11-20")
    assert spec.job == str(path)
    assert Path(spec.model).resolve() == ROOT / "data" / "demo" / "model.onnx"


def test_nightly_example_pins_the_bundled_model_and_scores_one_day():
    spec = batchscore.load_job(str(JOBS / "nightly_example.toml"), ds="2026-11-20")
    assert spec.model_sha256 == file_sha256(spec.model)
    assert spec.keep == ("application_id", "region", "product") and spec.mode == "resume"
    assert spec.inputs == (str(JOBS / ".." / "data/demo/ds=2026-11-20/*.parquet").replace("jobs/../", ""),)
    assert spec.out.endswith("out/nightly/ds=2026-11-20")


def test_nightly_example_runs_from_any_folder(tmp_path):
    """cron starts in $HOME: relative paths in the job file do not depend on it."""
    job = JOBS / "nightly_example.toml"
    result = shell(f"batchscore run {job} --ds 2026-11-17 --set 'output.path={tmp_path}/ds={{ds}}'", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    parts = list((tmp_path / "ds=2026-11-17").glob("*.parquet"))
    assert sum(pq.read_metadata(p).num_rows for p in parts) == DEMO_ROWS["2026-11-17"]


def dag_tree() -> ast.Module:
    return ast.parse((JOBS / "airflow_dag.py").read_text())


def dag_constant(name: str) -> str:
    for node in dag_tree().body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return str(ast.literal_eval(node.value))
    raise AssertionError(f"{name} not in jobs/airflow_dag.py")


def test_airflow_dag_builds_the_nightly_command_and_a_duckdb_summary(sandbox):
    tree = dag_tree()
    calls = {getattr(n.func, "id", None) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert {"DAG", "BashOperator", "ExternalPythonOperator"} <= calls
    command = dag_constant("SCORE_COMMAND")
    assert "batchscore run jobs/nightly_example.toml --ds {{ ds }}" in command

    ds = "2026-11-18"
    rendered = command.replace("{{ ds }}", ds)
    if not (sandbox / ".venv" / "bin" / "batchscore").exists():
        rendered = rendered.replace(".venv/bin/batchscore", str(BIN / "batchscore"))
    result = shell(rendered, cwd=sandbox)
    assert result.returncode == 0, result.stderr
    assert all(json.loads(line)["logger"] == "batchscore" for line in result.stderr.splitlines())

    # The downstream task's function alone, as ExternalPythonOperator runs it: its source, nothing around it.
    (function,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "summarize"]
    function.returns = None  # the annotation names typing.Any, which the DAG module imports
    namespace: dict[str, object] = {}
    exec(compile(ast.Module(body=[function], type_ignores=[]), "jobs/airflow_dag.py", "exec"), namespace)
    summary = namespace["summarize"](ds, str(sandbox))  # type: ignore[operator]
    assert summary["applications"] == DEMO_ROWS[ds]
    assert 0.05 < summary["avg_prob_bad"] < 0.3 and 0 < summary["bad"] < DEMO_ROWS[ds]


def test_airflow_dag_imports_when_airflow_is_installed(monkeypatch):
    pytest.importorskip("airflow")
    from airflow.models import DagBag

    bag = DagBag(dag_folder=str(JOBS / "airflow_dag.py"), include_examples=False)
    assert not bag.import_errors
    assert set(bag.dags["batchscore_nightly"].task_ids) == {"score", "summarize"}


AIRFLOW_VERSION = "3.3.2"
AIRFLOW_CONSTRAINTS = ROOT / "tests" / "fixtures" / "airflow-constraints.txt"


def airflow_venv() -> Path:
    """A throwaway virtual environment with Airflow, built once into an ignored folder and reused.

    ``.cache/airflow-3.3.2`` in the checkout, or ``$BATCHSCORE_AIRFLOW_VENV``; pinned by
    tests/fixtures/airflow-constraints.txt. Skips, saying why, when it cannot be built (no package index).
    """
    venv = Path(os.environ.get("BATCHSCORE_AIRFLOW_VENV") or ROOT / ".cache" / f"airflow-{AIRFLOW_VERSION}")
    stamp = venv / ".batchscore-installed"
    pins = AIRFLOW_CONSTRAINTS.read_text()
    if stamp.exists() and stamp.read_text() == pins:
        return venv
    shutil.rmtree(venv, ignore_errors=True)  # built in place (a venv cannot move), the stamp written last
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-c", str(AIRFLOW_CONSTRAINTS)]
    for step in ([sys.executable, "-m", "venv", str(venv)], [*pip, f"apache-airflow=={AIRFLOW_VERSION}"]):
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            pytest.skip(f"building a throwaway Airflow {AIRFLOW_VERSION} took over 15 minutes: {step[-1]}")
        if done.returncode != 0:
            why = [ln for ln in done.stderr.splitlines() if ln.strip() and "Location" not in ln][-1:] or ["?"]
            pytest.skip(f"cannot build a throwaway Airflow {AIRFLOW_VERSION} ({step[-1]}): {why[0]}")
    stamp.write_text(pins)
    return venv


@pytest.mark.airflow
@pytest.mark.skipif(
    os.environ.get("BATCHSCORE_TEST_AIRFLOW") != "1",
    reason="opt-in: `make test-airflow` (BATCHSCORE_TEST_AIRFLOW=1) runs the DAG in a real Airflow 3.3.2, "
    "building .cache/airflow-3.3.2 the first time (2-4.5 min on 2 cores), then about 50 s a run",
)
def test_airflow_dags_test_scores_and_summarizes_a_day(sandbox, tmp_path):
    """The DAG in a real Airflow 3: `airflow dags test` runs score (batchscore's CLI) and summarize
    (ExternalPythonOperator in batchscore's .venv, where DuckDB is) in an Airflow that has neither."""
    airflow = [str(airflow_venv() / "bin" / "python"), "-m", "airflow"]
    if not (sandbox / ".venv").exists():
        (sandbox / ".venv").symlink_to(sys.prefix)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(sandbox / "jobs"),
        "BATCHSCORE_HOME": str(sandbox),
        "PYTHONWARNINGS": "always::DeprecationWarning",
    }
    env.pop("PYTHONPATH", None)
    for args in (["db", "migrate"], ["dags", "test", "batchscore_nightly", "2026-11-18"]):
        result = subprocess.run([*airflow, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"airflow {' '.join(args)}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    log = result.stdout + result.stderr
    assert "DagRun Finished: dag_id=batchscore_nightly" in log and "state=success" in log
    assert f"batchscore summary: {{'ds': '2026-11-18', 'applications': {DEMO_ROWS['2026-11-18']}," in log
    assert "airflow.operators." not in log and "airflow_dag.py" not in log  # no deprecation warning from the DAG
    day = sandbox / "out" / "nightly" / "ds=2026-11-18"
    assert (day / "_SUCCESS").exists()
    assert sum(pq.read_metadata(p).num_rows for p in day.glob("*.parquet")) == DEMO_ROWS["2026-11-18"]


def test_readme_cron_line_runs(tmp_path):
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```crontab\n(.*?)```", readme, flags=re.S)
    assert block
    line = next(ln for ln in block.group(1).splitlines() if ln and not ln.startswith("#"))
    command = line.split(None, 5)[5]  # drop the five schedule fields
    command = command.replace("\\%", "%").replace("/opt/batchscore/.venv/bin/", f"{BIN}/")
    command = command.replace("/opt/batchscore/", f"{ROOT}/").replace("/var/log/", f"{tmp_path}/")
    command = command.replace('"$(date -d yesterday +%F)"', "2026-11-17")
    command = command.replace(
        "jobs/nightly_example.toml", f"jobs/nightly_example.toml --set output.path={tmp_path}/out"
    )
    result = shell(command, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    log = (tmp_path / "batchscore-nightly.log").read_text().splitlines()
    assert json.loads(log[-1])["rows_written"] == DEMO_ROWS["2026-11-17"]


def test_nightly_example_compares_each_night_with_the_one_before(sandbox):
    """Issue 11: the first night warns that it has no reference; the next is checked against it."""
    job = sandbox / "jobs" / "nightly_example.toml"
    first = shell(f"batchscore run {job} --ds 2026-11-19", cwd=sandbox)
    assert first.returncode == 0, first.stderr
    assert "ds=2026-11-18 does not exist (the first run?)" in first.stderr
    plan = shell(f"batchscore run {job} --ds 2026-11-20 --dry-run", cwd=sandbox)
    assert "drift: against" in plan.stdout and "ds=2026-11-19 (found)" in plan.stdout
    second = shell(f"batchscore run {job} --ds 2026-11-20", cwd=sandbox)
    assert second.returncode == 0, second.stderr
    assert "no drift against" in second.stderr
    summary = json.loads((sandbox / "out" / "nightly" / "ds=2026-11-20" / "_batchscore_summary.json").read_text())
    assert summary["drift"]["reference"].endswith("out/nightly/ds=2026-11-19")
    assert summary["drift"]["flagged"] == [] and summary["rows"] == DEMO_ROWS["2026-11-20"]
    report = shell("batchscore report out/nightly/ds=2026-11-20", cwd=sandbox)
    assert report.returncode == 0 and "no drift against" in report.stdout


def test_nightly_delta_job_commits_one_night_and_replaces_it_on_request(tmp_path):
    import polars as pl

    pytest.importorskip("deltalake")
    job = JOBS / "nightly_delta.toml"
    table = tmp_path / "scores"
    command = f"batchscore run {job} --ds 2026-11-20 --set output.path={table} -q"
    assert (first := shell(command, cwd=tmp_path)).returncode == 0, first.stderr
    scores = pl.read_delta(str(table))
    assert scores.height == DEMO_ROWS["2026-11-20"]
    assert scores["ds"].cast(pl.String).unique().to_list() == ["2026-11-20"]  # a ds= folder is a date (issue 9)

    assert (retry := shell(command, cwd=tmp_path)).returncode == 0, retry.stderr  # a retried task: nothing to do
    assert (again := shell(command + " --set output.mode=overwrite", cwd=tmp_path)).returncode == 0, again.stderr
    assert shell(f"batchscore run {job} --ds 2026-11-19 --set output.path={table} -q", cwd=tmp_path).returncode == 0

    history = shell(f"batchscore inspect {table} --json", cwd=tmp_path)
    versions = json.loads(history.stdout)["history"]
    assert [(v["version"], v["partition"], v["rows"]) for v in versions] == [
        (2, "ds=2026-11-19", DEMO_ROWS["2026-11-19"]),
        (1, "ds=2026-11-20", DEMO_ROWS["2026-11-20"]),  # replaced, not appended
        (0, "ds=2026-11-20", DEMO_ROWS["2026-11-20"]),
    ]
    days = pl.read_delta(str(table)).group_by(pl.col("ds").cast(pl.String)).len().sort("ds").rows()  # ds: a date
    assert days == [("2026-11-19", DEMO_ROWS["2026-11-19"]), ("2026-11-20", DEMO_ROWS["2026-11-20"])]
