"""batchscore.spark on a real local[2] Spark session, started once for this module (skipped without Java 17+)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, bad_age_files, make_table, mixed_table, write_files

import batchscore
import batchscore.spark
from batchscore.errors import JobSpecError, SchemaMismatchError

pyspark = pytest.importorskip("pyspark")
pytestmark = [pytest.mark.spark, pytest.mark.xdist_group("spark")]

README = (ROOT / "README.md").read_text()


def java_problem() -> str | None:
    """Why Spark 4 cannot start here (it needs Java 17 or newer), or None."""
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    if not java or not os.path.exists(java):
        return "no Java found (Spark 4 needs Java 17+: apt-get install openjdk-17-jre-headless)"
    try:
        text = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60).stderr
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{java} -version failed: {exc}"
    found = re.search(r'version "(\d+)', text)
    if not found or int(found.group(1)) < 17:
        return f"Spark 4 needs Java 17+, found {text.splitlines()[0] if text else 'nothing'} at {java}"
    return None


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    problem = java_problem()
    if problem:
        print(f"skipping the Spark tests: {problem}", file=sys.stderr)
        pytest.skip(problem)
    from pyspark.sql import SparkSession

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYSPARK_PYTHON", sys.executable)  # or the workers start a Python without batchscore
        patch.setenv("PYSPARK_DRIVER_PYTHON", sys.executable)
        session = (
            SparkSession.builder.master("local[2]")
            .appName("batchscore-tests")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.shuffle.partitions", "2")
            .config("spark.driver.memory", "1g")
            .getOrCreate()
        )
        session.sparkContext.setLogLevel("ERROR")
        try:
            yield session
        finally:
            session.stop()


def by_id(table: pa.Table) -> pa.Table:
    return table.sort_by("id").combine_chunks()


def test_map_in_arrow_equals_the_cli_for_the_same_rows(spark, models, mixed_model, tmp_path):
    write_files(tmp_path / "in", [make_table(3000, seed=i, start_id=i * 3000) for i in range(3)], row_group_size=700)
    inputs, model = (str(tmp_path / "in"),), str(models["logreg"])
    batchscore.run(batchscore.JobSpec(inputs=inputs, model=model, out=str(tmp_path / "cli"), keep=("id", "segment")))
    df = spark.read.parquet(str(tmp_path / "in"))
    fn, schema = batchscore.spark.score_function(df, models["logreg"], keep=["id", "segment"])
    scored = df.repartition(4).mapInArrow(fn, schema).toArrow()  # Spark's partitions and order, not the files'
    cli = pq.read_table(tmp_path / "cli")
    assert scored.column_names == cli.column_names == ["id", "segment", "prediction", "prob_0", "prob_1", "prob_2"]
    assert by_id(scored).equals(by_id(cli))

    tables = [mixed_table(900, seed=i) for i in range(2)]
    tables = [t.set_column(0, "id", pa.array(range(i * 900, (i + 1) * 900), pa.int64())) for i, t in enumerate(tables)]
    write_files(tmp_path / "mixed", tables, row_group_size=300)
    out = tmp_path / "mixed-cli"
    batchscore.run(
        batchscore.JobSpec(inputs=(str(tmp_path / "mixed"),), model=str(mixed_model), out=str(out), keep=("id",))
    )
    df = spark.read.parquet(str(tmp_path / "mixed"))  # three typed inputs, a string one among them
    fn, schema = batchscore.spark.score_function(df, mixed_model, keep=["id"])
    got = by_id(df.mapInArrow(fn, schema).toArrow())
    want = by_id(pq.read_table(out))
    assert got.column_names == want.column_names and got.equals(want)


def test_mapping_errors_come_before_any_task_and_value_errors_from_the_workers(spark, mixed_model, tmp_path):
    bad_age_files(tmp_path / "in")
    df = spark.read.parquet(str(tmp_path / "in" / "part-3.parquet"))
    with pytest.raises(JobSpecError, match="--input names 'nope'"):
        batchscore.spark.score_function(df, mixed_model, input_columns={"nope": "age"})
    with pytest.raises(SchemaMismatchError, match="keep column"):
        batchscore.spark.score_function(df, mixed_model, keep=["missing_id"])
    fn, schema = batchscore.spark.score_function(df, mixed_model, keep=["id"])
    with pytest.raises(Exception, match=r"SchemaMismatchError: column 'age' has \d+ value\(s\) that are not whole"):
        df.mapInArrow(fn, schema).collect()


def test_the_model_loads_once_per_python_worker(spark, models, tmp_path):
    write_files(tmp_path / "in", [make_table(500, seed=i, start_id=i * 500) for i in range(8)], row_group_size=100)
    df = spark.read.parquet(str(tmp_path / "in")).repartition(8)
    fn, _ = batchscore.spark.score_function(df, models["logreg"], keep=["id"])

    def loads(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        rows = sum(b.num_rows for b in fn(batches))  # score the partition, then say what this worker loaded
        loaded = batchscore.spark.model_loads(fn.sha256)
        yield pa.RecordBatch.from_pydict({"pid": [os.getpid()], "loads": [loaded], "n": [rows]})

    seen = df.mapInArrow(loads, "pid long, loads long, n long").toArrow().to_pylist()
    assert sum(r["n"] for r in seen) == 4000 and len(seen) == 8
    assert all(r["loads"] == 1 for r in seen)  # 8 partitions, one load in each Python worker


def test_readme_spark_example_runs(spark, sandbox, monkeypatch):
    blocks = re.findall(r"```python spark\n(.*?)```", README, flags=re.S)
    assert len(blocks) == 1
    # Spark resolves relative paths against the JVM's folder, not Python's: point the example at the sandbox
    block = blocks[0].replace('"data/', f'"{sandbox}/data/').replace('"out/', f'"{sandbox}/out/')
    monkeypatch.chdir(sandbox)
    exec(compile(block, "README.md", "exec"), {})
    out = pq.read_table(sandbox / "out" / "demo-spark")
    assert out.num_rows == 200_000
    assert {"application_id", "prediction", "prob_bad", "prob_good", "score"} <= set(out.column_names)
