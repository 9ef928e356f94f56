"""The output is what the next morning's SQL reads: DuckDB and Polars over DIR/*.parquet."""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
from conftest import direct_run, make_table, table_matrix, write_files

import batchscore


def test_duckdb_reads_documented_columns_and_types(models, dataset, tmp_path):
    files = dataset(files=3, rows=1000)
    spec = batchscore.JobSpec(
        inputs=(str(tmp_path / "in"),), model=str(models["strings"]), out=str(tmp_path / "out"), keep=("id", "segment")
    )
    batchscore.run(spec)
    con = duckdb.connect()
    glob = f"{tmp_path}/out/*.parquet"
    described = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{glob}')").fetchall()
    assert [(name, dtype) for name, dtype, *_ in described] == [
        ("id", "BIGINT"),
        ("segment", "VARCHAR"),
        ("prediction", "VARCHAR"),
        ("prob_high", "FLOAT"),
        ("prob_low", "FLOAT"),
        ("prob_mid", "FLOAT"),
    ]
    rows = con.execute(
        f"SELECT prediction, count(*), avg(prob_high) FROM read_parquet('{glob}') GROUP BY 1 ORDER BY 1"
    ).fetchall()
    labels, probs = direct_run(models["strings"], np.concatenate([table_matrix(f) for f in files]))
    probs = np.array([[row["high"] for row in probs]], dtype=np.float32)[0]
    expected = sorted((lab, int((labels == lab).sum())) for lab in set(labels.tolist()))
    assert [(lab, n) for lab, n, _ in rows] == expected
    assert sum(n for _, n, _ in rows) == 3000
    overall = sum(avg * n for _, n, avg in rows) / 3000
    assert abs(overall - float(probs.mean())) < 1e-5
    assert con.execute(f"SELECT count(DISTINCT id) FROM read_parquet('{glob}')").fetchone() == (3000,)


def test_polars_scan_joins_back_on_id(models, dataset, tmp_path):
    dataset(files=2, rows=500)
    spec = batchscore.JobSpec(
        inputs=(str(tmp_path / "in"),), model=str(models["logreg"]), out=str(tmp_path / "out"), keep=("id",)
    )
    batchscore.run(spec)
    scores = pl.scan_parquet(f"{tmp_path}/out/*.parquet")
    source = pl.scan_parquet(f"{tmp_path}/in/*.parquet")
    joined = source.join(scores, on="id", how="inner").collect()
    assert joined.height == 1000
    assert (
        joined.select(pl.col("prob_0") + pl.col("prob_1") + pl.col("prob_2")).to_series().is_between(0.999, 1.001).all()
    )


def test_partitioned_output_reads_back_with_hive_discovery(models, dataset, tmp_path):
    files = dataset(files=3, rows=400)
    spec = batchscore.JobSpec(
        inputs=(str(tmp_path / "in"),),
        model=str(models["logreg"]),
        out=str(tmp_path / "out"),
        keep=("id", "segment"),
        partition_by=("segment",),
    )
    report = batchscore.run(spec)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "_SUCCESS",
        "_batchscore.json",
        "_batchscore_summary.json",  # issue 11
        "_batchscore_summary_parts.json",
        "segment=a",
        "segment=b",
        "segment=c",
    ]
    assert sorted(p.name for p in (out / "segment=a").iterdir()) == [f"part-0000{i}-0.parquet" for i in range(3)]
    assert len(report.parts) == 9

    flat = batchscore.run(spec.replace(out=str(tmp_path / "flat"), partition_by=None))
    expected = pl.read_parquet([str(p) for p in flat.parts]).sort("id")
    con = duckdb.connect()
    glob = f"{out}/*/*.parquet"
    got = con.sql(f"SELECT * FROM read_parquet('{glob}', hive_partitioning = true) ORDER BY id").pl()
    assert got.height == 1200
    assert got.select(expected.columns).equals(expected)
    by_segment = con.execute(
        f"SELECT segment, count(*) FROM read_parquet('{glob}', hive_partitioning = true) GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert by_segment == expected.group_by("segment").len().sort("segment").rows()

    scanned = pl.scan_parquet(glob, hive_partitioning=True).collect().sort("id")
    assert scanned.select(expected.columns).equals(expected)
    assert pl.read_parquet([str(f) for f in files]).height == 1200


def test_partitioned_overwrite_drops_partitions_that_are_gone(models, dataset, tmp_path):
    dataset(files=2, rows=300)
    spec = batchscore.JobSpec(
        inputs=(str(tmp_path / "in"),),
        model=str(models["logreg"]),
        out=str(tmp_path / "out"),
        keep=("id", "segment"),
        partition_by=("segment",),
        mode="overwrite",
    )
    batchscore.run(spec)
    batchscore.run(spec.replace(filter="segment <> 'b'"))
    out = tmp_path / "out"
    summaries = ["_batchscore_summary.json", "_batchscore_summary_parts.json"]  # issue 11
    assert sorted(p.name for p in out.iterdir()) == [
        "_SUCCESS",
        "_batchscore.json",
        *summaries,
        "segment=a",
        "segment=c",
    ]
    batchscore.run(spec.replace(filter="segment <> 'b'", mode="resume"))  # the same output again: nothing to do


def test_chain_two_nightly_runs_then_sql_over_both(models, tmp_path):
    """Like production: the job runs for two days, then the morning query reads every day's scores."""
    days = {"2026-11-19": 700, "2026-11-20": 500}
    for i, (ds, rows) in enumerate(days.items()):
        write_files(tmp_path / "landing" / f"ds={ds}", [make_table(rows, seed=40 + i, start_id=i * 10_000)])
    job = tmp_path / "jobs" / "nightly.toml"
    job.parent.mkdir()
    job.write_text(
        f'[model]\npath = "{models["logreg"]}"\n'
        '[input]\npaths = ["../landing/ds={ds}/*.parquet"]\nkeep = ["id", "segment"]\n'
        '[output]\npath = "../scores/ds={ds}"\nmode = "resume"\n'
    )
    for ds in days:
        batchscore.run(batchscore.load_job(str(job), ds=ds))

    got = duckdb.sql(
        f"SELECT CAST(ds AS VARCHAR), count(*), avg(prob_1) FROM read_parquet('{tmp_path}/scores/*/*.parquet', "
        "hive_partitioning = true) GROUP BY ALL ORDER BY 1"
    ).fetchall()
    assert [(ds, n) for ds, n, _ in got] == list(days.items())
    for (ds, _, avg), i in zip(got, range(2), strict=True):
        probs = direct_run(models["logreg"], table_matrix(tmp_path / "landing" / f"ds={ds}" / "part-0.parquet"))[1]
        assert abs(avg - float(probs[:, 1].mean())) < 1e-6, (ds, i)
