"""--format delta: one atomic, idempotent commit per day, read back by deltalake and Polars, exit codes kept."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import DAYS, ROOT, cli, day_files, direct_run, make_table, nightly, table_matrix, write_files

import batchscore
from batchscore import JobSpec
from batchscore.delta import DeltaOutput, Unit, delta_schema
from batchscore.errors import InputDataError, JobSpecError, OutputError, OutputExistsError
from batchscore.pipeline import _header, prepare

deltalake = pytest.importorskip("deltalake")

KEEP = ("id", "segment", "ds")


def read(table: Path, version: int | None = None) -> pl.DataFrame:
    """The table through Polars (delta-rs's log, Polars' Parquet reader), rows by id."""
    return pl.read_delta(str(table), version=version).sort("id")


def history(table: Path) -> list[dict]:
    return deltalake.DeltaTable(str(table)).history()


def test_delta_output_reads_back_like_the_parquet_output(models, tmp_path):
    """Same rows, columns and types as --format parquet, through Polars and through deltalake's own engine."""
    folder = day_files(tmp_path, "2026-11-20", files=3, rows=1200)
    spec = nightly(tmp_path, "2026-11-20", models["logreg"])
    report = batchscore.run(spec)
    batchscore.run(spec.replace(format="parquet", out=str(tmp_path / "parquet")))

    got = read(tmp_path / "table")
    want = pl.read_parquet(tmp_path / "parquet" / "ds=2026-11-20" / "*.parquet", hive_partitioning=True).sort("id")
    assert sorted(got.columns) == sorted(want.columns) == sorted([*KEEP, "prediction", "prob_0", "prob_1", "prob_2"])
    assert got.select(want.columns).equals(want)
    assert dict(got.schema) == dict(want.schema)
    assert report.rows_written == got.height == 3600

    x = np.concatenate([table_matrix(f) for f in sorted(folder.glob("*.parquet"))])
    labels, probs = direct_run(models["logreg"], x)
    assert got["prediction"].to_list() == labels.tolist()  # ids increase with the files, so sorted = input order
    np.testing.assert_array_equal(got.select("prob_0", "prob_1", "prob_2").to_numpy(), probs)

    sql = deltalake.QueryBuilder().register("scores", deltalake.DeltaTable(str(tmp_path / "table")))
    counted = pa.table(sql.execute("SELECT ds, count(*) AS n FROM scores GROUP BY ds").read_all())
    assert counted.to_pylist() == [{"ds": date(2026, 11, 20), "n": 3600}]  # a ds= folder is a date (issue 9)


def test_duckdb_reads_it_when_its_delta_extension_loads(models, tmp_path):
    duckdb = pytest.importorskip("duckdb")
    day_files(tmp_path, "2026-11-20")
    batchscore.run(nightly(tmp_path, "2026-11-20", models["logreg"]))
    try:
        duckdb.sql("LOAD delta")
    except duckdb.Error:
        pytest.skip("DuckDB's delta extension is not installed (it cannot be fetched offline)")
    rows = duckdb.sql(f"SELECT count(*) FROM delta_scan('{tmp_path / 'table'}')").fetchone()
    assert rows == (DAYS["2026-11-20"],)


def test_two_nights_then_a_rerun_of_the_first_replaces_it_in_one_commit(models, tmp_path):
    for ds in DAYS:
        day_files(tmp_path, ds)
    batchscore.run(nightly(tmp_path, "2026-11-20", models["logreg"]))
    batchscore.run(nightly(tmp_path, "2026-11-21", models["logreg"]))
    first = read(tmp_path / "table").filter(pl.col("ds") == date(2026, 11, 20))

    # a fixed model rescores the first night
    batchscore.run(nightly(tmp_path, "2026-11-20", models["forest"], mode="overwrite"))

    assert [h["version"] for h in history(tmp_path / "table")] == [2, 1, 0]
    now = read(tmp_path / "table")
    assert now.group_by("ds").len().sort("ds").rows() == [(date(2026, 11, 20), 3000), (date(2026, 11, 21), 2500)]
    rescored = now.filter(pl.col("ds") == date(2026, 11, 20))
    assert rescored["id"].equals(first["id"])  # replaced, not duplicated
    assert not rescored["prob_0"].equals(first["prob_0"])
    assert read(tmp_path / "table", version=1).filter(pl.col("ds") == date(2026, 11, 20)).equals(first)  # time travel
    assert read(tmp_path / "table", version=1).height == 5500


def test_a_retried_run_is_a_no_op_and_a_changed_input_is_rescored(models, tmp_path):
    day_files(tmp_path, "2026-11-20")
    spec = nightly(tmp_path, "2026-11-20", models["logreg"])
    batchscore.run(spec)
    for mode in ("error", "resume"):  # the retry of an attempt that did commit finds its transaction
        report = batchscore.run(spec.replace(mode=mode))
        assert report.rows_written == 0 and report.parts_skipped == 1
    assert len(history(tmp_path / "table")) == 1

    table = deltalake.DeltaTable(str(tmp_path / "table"))
    ours = history(tmp_path / "table")[0]["batchscore"]
    assert table.transaction_version(ours["app_id"]) is not None

    day_files(tmp_path, "2026-11-20", seed=7)  # the day's data re-landed, corrected
    with pytest.raises(
        OutputExistsError, match=r"ds=2026-11-20 .* already holds 3,000 scored row\(s\).*--mode overwrite"
    ):
        batchscore.run(spec)
    assert batchscore.run(spec.replace(mode="resume")).rows_written == 3000
    assert len(history(tmp_path / "table")) == 2 and read(tmp_path / "table").height == 3000


def test_overwrite_rewrites_even_an_identical_run(models, tmp_path):
    day_files(tmp_path, "2026-11-20")
    spec = nightly(tmp_path, "2026-11-20", models["logreg"], mode="overwrite")
    batchscore.run(spec)
    first = read(tmp_path / "table")
    assert batchscore.run(spec).rows_written == 3000
    assert len(history(tmp_path / "table")) == 2 and read(tmp_path / "table").equals(first)


def test_each_commit_records_its_lineage(models, tmp_path):
    day_files(tmp_path, "2026-11-20")
    report = batchscore.run(nightly(tmp_path, "2026-11-20", models["logreg"]))
    commit = history(tmp_path / "table")[0]
    ours = commit["batchscore"]
    assert ours["run_id"] == report.run_id
    assert ours["model"] == str(models["logreg"]) and ours["model_sha256"] == report.model_sha256
    assert len(ours["spec_hash"]) == 16
    assert ours["onnxruntime_version"] == report.onnxruntime_version and ours["provider"] == report.provider
    assert ours["batchscore_version"] == batchscore.__version__
    assert ours["rows"] == commit["operationMetrics"]["num_added_rows"] == 3000
    assert ours["partition"] == "ds=2026-11-20"
    assert commit["operationParameters"]["predicate"] == "ds = '2026-11-20'::date"  # delta-rs unquotes it


def _corrupt_data_pages(path: Path) -> None:
    """Scribble over the column data but keep the footer, so the failure comes mid-stream."""
    data = bytearray(path.read_bytes())
    for i in range(200, len(data) // 2):
        data[i] = 0x5A
    path.write_bytes(bytes(data))


def test_a_failure_in_file_3_leaves_the_table_at_its_previous_version(models, tmp_path):
    day_files(tmp_path, "2026-11-20")
    batchscore.run(nightly(tmp_path, "2026-11-20", models["logreg"]))
    before = read(tmp_path / "table")
    folder = day_files(tmp_path, "2026-11-21", files=4, rows=20_000)
    _corrupt_data_pages(folder / "part-2.parquet")

    with pytest.raises(InputDataError, match=r"part-2\.parquet"):
        batchscore.run(nightly(tmp_path, "2026-11-21", models["logreg"], batch_size=1000))

    assert deltalake.DeltaTable(str(tmp_path / "table")).version() == 0
    assert read(tmp_path / "table").equals(before)


def _failed_write(table: Path, ds: str) -> None:
    """What a run that dies mid-stream leaves: data files, flushed as it went, that no version references."""
    schema = pa.schema(deltalake.DeltaTable(str(table)).schema().to_arrow())
    rows = read(table).with_columns(pl.lit(ds).alias("ds")).to_arrow().select(schema.names).cast(schema)

    def batches():
        for _ in range(20):
            yield from rows.to_batches()
        raise RuntimeError("killed mid-stream")

    reader = pa.RecordBatchReader.from_batches(schema, batches())
    with pytest.raises(Exception, match="killed mid-stream"):
        deltalake.write_deltalake(
            str(table),
            reader,
            mode="overwrite",
            predicate=f"ds = '{ds}'",
            partition_by=["ds"],
            target_file_size=1,
            writer_properties=deltalake.WriterProperties(max_row_group_size=500),
        )


def test_files_a_failed_run_left_are_vacuumed_by_the_next_run_once_old_enough(models, tmp_path, caplog):
    for ds in DAYS:
        day_files(tmp_path, ds)
    batchscore.run(nightly(tmp_path, "2026-11-20", models["logreg"]))
    batchscore.run(nightly(tmp_path, "2026-11-20", models["forest"], mode="overwrite"))
    table = tmp_path / "table"
    _failed_write(table, "2026-11-21")

    def orphans() -> set[str]:
        found = deltalake.DeltaTable(str(table)).vacuum(
            retention_hours=0, enforce_retention_duration=False, full=True, keep_versions=[0, 1]
        )
        return set(found)

    if not orphans():  # delta-rs flushes files in the background: a stream killed early may have left none yet
        folder = table / "ds=2026-11-21"
        folder.mkdir(exist_ok=True)
        written = next(table.glob("ds=2026-11-20/*.parquet"))
        shutil.copy(written, folder / "part-00000-0badc0de-0000-4000-8000-000000000000-c000.zstd.parquet")
    left = orphans()
    assert left and all("2026-11-21" in f for f in left)

    batchscore.run(nightly(tmp_path, "2026-11-21", models["logreg"]))  # younger than the 7-day retention: kept
    assert orphans() >= left

    deltalake.DeltaTable(str(table)).alter.set_table_properties(
        {"delta.deletedFileRetentionDuration": "interval 0 hours"}
    )
    caplog.set_level("INFO", logger="batchscore")
    batchscore.run(nightly(tmp_path, "2026-11-21", models["forest"], mode="overwrite"))
    assert not orphans() & left
    assert "no version references" in caplog.text
    assert read(table, version=0).filter(pl.col("ds") == date(2026, 11, 20)).height == 3000  # time travel intact


def test_another_output_schema_is_refused_with_the_way_to_write_it(models, tmp_path):
    for ds in DAYS:
        day_files(tmp_path, ds)
    batchscore.run(nightly(tmp_path, "2026-11-20", models["logreg"]))
    other = nightly(tmp_path, "2026-11-21", models["strings"])  # classes low/mid/high, string predictions
    with pytest.raises(OutputError, match=r"type changed: prediction int64 -> string.*another --out") as refused:
        batchscore.run(other)
    assert "new: prob_high, prob_low, prob_mid" in str(refused.value)

    more = nightly(tmp_path, "2026-11-21", models["logreg"], with_score=True)
    with pytest.raises(OutputError, match=r"new: score.*--schema-mode merge"):
        batchscore.run(more)
    batchscore.run(more.replace(schema_mode="merge"))
    merged = read(tmp_path / "table")
    assert merged.group_by("ds").agg(pl.col("score").null_count()).sort("ds").rows() == [
        (date(2026, 11, 20), 3000),
        (date(2026, 11, 21), 0),
    ]


def test_the_table_keeps_its_partitioning(models, tmp_path):
    day_files(tmp_path, "2026-11-20")
    batchscore.run(nightly(tmp_path, "2026-11-20", models["logreg"]))
    with pytest.raises(OutputError, match="partitioned by ds, this run by segment; pass --partition-by ds"):
        batchscore.run(nightly(tmp_path, "2026-11-20", models["logreg"], partition_by=("segment",), mode="overwrite"))


def test_the_replaced_unit_must_be_an_input_column(models, tmp_path):
    day_files(tmp_path, "2026-11-20")
    with pytest.raises(JobSpecError, match=r"'prediction' is not in .*put a kept column first in --partition-by"):
        batchscore.run(nightly(tmp_path, "2026-11-20", models["logreg"], partition_by=("prediction", "ds")))
    assert not (tmp_path / "table").exists()


def test_an_unpartitioned_table_is_replaced_whole(models, tmp_path):
    day_files(tmp_path, "2026-11-20")
    spec = nightly(tmp_path, "2026-11-20", models["logreg"], partition_by=None)
    batchscore.run(spec)
    with pytest.raises(OutputExistsError, match="the whole table of Delta table"):
        batchscore.run(spec.replace(model=str(models["forest"])))
    batchscore.run(spec.replace(model=str(models["forest"]), mode="overwrite"))
    assert read(tmp_path / "table").height == 3000


def test_a_folder_that_is_not_a_delta_table_is_refused(models, tmp_path):
    day_files(tmp_path, "2026-11-20")
    batchscore.run(nightly(tmp_path, "2026-11-20", models["logreg"], format="parquet", partition_by=None))
    with pytest.raises(OutputExistsError, match="not a Delta table"):
        batchscore.run(nightly(tmp_path, "2026-11-20", models["logreg"], mode="overwrite"))


def _output(spec: JobSpec, run_id: str) -> tuple[DeltaOutput, object]:
    ready = prepare(spec)
    out = DeltaOutput(
        spec.out,
        mode=spec.mode,
        run_id=run_id,
        metadata={},
        schema=ready.plan.output_schema(ready.files[0]),
        partition_by=spec.partition_by,
        header=_header(ready, run_id=run_id, started_at=""),
        storage_options=spec.storage_options,
    )
    return out, ready


def _stream_into(out: DeltaOutput, ready, files: list[int]) -> None:
    from batchscore.scorer import BatchScorer

    schema = ready.plan.output_schema(ready.files[0])
    scorer = BatchScorer(ready.model, ready.plan, on_null="error", fill_value=0.0)
    for index in files:
        file = ready.files[index]
        batches = []
        for batch in batchscore.reader.iter_batches(file, ready.plan.read_columns, batch_size=1024):
            predicted = scorer.infer(scorer.assemble(batch, source=file.path))
            batches.append(pa.RecordBatch.from_arrays(batch.columns[: len(ready.plan.keep)] + predicted, schema=schema))
        out.write_part(index, schema, batches)
        out.finish_part(index, {"rows": sum(b.num_rows for b in batches)})


def test_two_runs_committing_the_same_day_at_once_one_wins_the_other_fails_cleanly(models, tmp_path):
    day_files(tmp_path, "2026-11-20", files=2)
    batchscore.run(nightly(tmp_path, "2026-11-20", models["logreg"]))
    first, ready_first = _output(nightly(tmp_path, "2026-11-20", models["forest"], mode="overwrite"), "run-a")
    second, ready_second = _output(nightly(tmp_path, "2026-11-20", models["logreg_zipmap"], mode="overwrite"), "run-b")
    try:
        first.open(ready_first.files)
        second.open(ready_second.files)  # both checked against version 0
        _stream_into(first, ready_first, [0, 1])
        _stream_into(second, ready_second, [0, 1])
        first.commit(2, {})
        with pytest.raises(OutputError, match=r"another run committed to ds=2026-11-20 .* committed nothing") as lost:
            second.commit(2, {})
        assert lost.value.exit_code == 5
    finally:
        first.close()
        second.close()
    table = deltalake.DeltaTable(str(tmp_path / "table"))
    assert table.version() == 1 and history(tmp_path / "table")[0]["batchscore"]["run_id"] == "run-a"
    assert read(tmp_path / "table").height == 6000  # nothing lost, nothing doubled


@pytest.mark.slow
def test_two_nights_committing_at_once_both_land(models, tmp_path):
    """Different days do not clash: delta-rs retries the later commit on top of the earlier one."""
    for ds in DAYS:
        day_files(tmp_path, ds, files=3, rows=20_000)
    command = ["--model", models["logreg"], "--out", tmp_path / "table", "--keep", ",".join(KEEP)]
    command += ["--partition-by", "ds", "--format", "delta", "--batch-size", "2000", "-q"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "batchscore", "score", str(tmp_path / "in" / f"ds={ds}"), *map(str, command)],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for ds in DAYS
    ]
    results = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in procs]
    for code, stderr in results:
        assert code in (0, 5), stderr
        assert "Traceback" not in stderr
        if code == 5:  # lost a race delta-rs could not reconcile: a clean message, nothing half-written
            assert "another run committed" in stderr
    counts = {str(ds): n for ds, n in read(tmp_path / "table").group_by("ds").len().rows()}  # ds: dates
    landed = [ds for ds, (code, _) in zip(DAYS, results, strict=True) if code == 0]
    assert counts == {ds: 60_000 for ds in landed}


@pytest.mark.slow
def test_exit_codes_stay_true_over_many_runs(models, tmp_path):
    """delta-rs#2184: a process that used deltalake may abort at exit (134); batchscore's codes must not change."""
    day_files(tmp_path, "2026-11-20", rows=500)
    base = ["score", tmp_path / "in" / "ds=2026-11-20", "--out", tmp_path / "table", "--keep", ",".join(KEEP)]
    base += ["--partition-by", "ds", "--format", "delta", "-q"]
    codes = []
    for i in range(8):
        model = models["logreg"] if i % 2 == 0 else models["forest"]
        codes.append(cli(*base, "--model", model, "--mode", "overwrite").returncode)  # writes: 0
        codes.append(cli(*base, "--model", models["mlp"]).returncode)  # other schema: 5
        codes.append(cli("inspect", tmp_path / "table").returncode)  # reads the log: 0
    assert codes == [0, 5, 0] * 8


def test_dry_run_says_which_day_it_would_replace(models, tmp_path):
    day_files(tmp_path, "2026-11-20")
    job = tmp_path / "job.toml"
    job.write_text(
        f'[model]\npath = "{models["logreg"]}"\n[input]\npaths = "in/ds={{ds}}"\nkeep = ["id", "segment", "ds"]\n'
        '[output]\npath = "table"\nformat = "delta"\npartition_by = ["ds"]\nmode = "overwrite"\n'
    )
    plan = cli("run", job, "--ds", "2026-11-20", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert "action: score 1 file(s) and write ds=2026-11-20 of a new table in one commit" in plan.stdout
    assert "(Delta table, mode overwrite, zstd, partitioned by ds)" in plan.stdout
    assert not (tmp_path / "table").exists()
    assert cli("run", job, "--ds", "2026-11-20", "-q").returncode == 0
    again = cli("run", job, "--ds", "2026-11-20", "--dry-run")
    assert "replace ds=2026-11-20 (3,000 row(s) there now) of version 0" in again.stdout


@pytest.mark.parametrize(
    ("unit", "dtype", "predicate"),
    [
        (Unit("ds", ("2026-11-20",)), pa.string(), "\"ds\" = '2026-11-20'"),  # one day
        (Unit("ds", ("a", "b")), pa.string(), "\"ds\" IN ('a', 'b')"),  # several days in one run
        (Unit("who", ("o'neil",)), pa.string(), "\"who\" = 'o''neil'"),  # quotes doubled
        (Unit("day", (20261120,)), pa.int64(), '"day" = 20261120'),  # integer partitions
        (Unit("ds", ("a", None)), pa.string(), '"ds" = \'a\' OR "ds" IS NULL'),  # nulls
        (Unit(None), pa.string(), None),  # unpartitioned: the whole table
    ],
)
def test_unit_predicates(unit, dtype, predicate):
    assert unit.predicate(dtype) == predicate


def test_a_float_partition_column_is_refused():
    with pytest.raises(JobSpecError, match="partition by a string, integer, boolean or date column"):
        Unit("score", (0.5,)).predicate(pa.float64())


@pytest.mark.parametrize(
    ("arrow", "delta"),
    [
        (pa.uint8(), pa.int16()),  # Delta has no unsigned types: widened, no value lost
        (pa.uint32(), pa.int64()),
        (pa.float16(), pa.float32()),  # nor half floats
        (pa.string(), pa.string()),  # the rest as is
        (pa.float32(), pa.float32()),
    ],
)
def test_delta_schema_widens_what_delta_cannot_hold(arrow, delta):
    assert delta_schema(pa.schema([("c", arrow)])).field("c").type == delta


def test_uint64_is_refused():
    with pytest.raises(JobSpecError, match="uint64"):
        delta_schema(pa.schema([("c", pa.uint64())]))


def test_unsigned_passthrough_columns_round_trip(models, tmp_path):
    table = make_table(500).append_column("code", pa.array(np.arange(500) % 250, pa.uint8()))
    pq.write_table(table, tmp_path / "in.parquet")
    spec = JobSpec(
        inputs=(str(tmp_path / "in.parquet"),),
        model=str(models["logreg"]),
        out=str(tmp_path / "table"),
        keep=("id", "code"),
        format="delta",
    )
    batchscore.run(spec)
    got = read(tmp_path / "table")
    assert got["code"].dtype == pl.Int16 and got["code"].to_list() == (np.arange(500) % 250).tolist()


def test_without_deltalake_the_error_says_how_to_install_it(models, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "deltalake", None)  # as if the extra were not installed
    day_files(tmp_path, "2026-11-20")
    with pytest.raises(JobSpecError, match=r"pip install 'batchscore\[delta\]'"):
        batchscore.run(nightly(tmp_path, "2026-11-20", models["logreg"]))


def test_schema_mode_merge_needs_the_delta_format(tmp_path):
    with pytest.raises(JobSpecError, match="schema_mode 'merge' applies to Delta tables only"):
        JobSpec(inputs=("x",), model="m.onnx", out="o", schema_mode="merge")


@pytest.mark.slow
def test_sigterm_mid_stream_commits_nothing_and_exits_143(models, tmp_path):
    """Airflow stops a task with SIGTERM: the stream ends with an error, so delta-rs publishes no version."""
    day_files(tmp_path, "2026-11-20", rows=500)
    batchscore.run(nightly(tmp_path, "2026-11-20", models["logreg"]))
    write_files(tmp_path / "in" / "ds=2026-11-21", [make_table(4000, seed=i) for i in range(12)], row_group_size=500)
    command = [sys.executable, "-m", "batchscore", "score", tmp_path / "in" / "ds=2026-11-21", "--model"]
    command += [models["logreg"], "--out", tmp_path / "table", "--keep", ",".join(KEEP), "--partition-by", "ds"]
    command += ["--format", "delta", "--batch-size", "8", "-v"]
    proc = subprocess.Popen(
        list(map(str, command)), stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # scoring: the first file's rows are in the stream
        if "scored " in line and "(1/12)" in line:
            break
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 143, rest
    assert "terminated (SIGTERM); nothing was committed" in rest and "Traceback" not in rest
    assert deltalake.DeltaTable(str(tmp_path / "table")).version() == 0
    assert read(tmp_path / "table")["ds"].unique().to_list() == [date(2026, 11, 20)]
