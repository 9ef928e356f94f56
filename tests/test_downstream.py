"""The output is what the next morning's SQL reads: DuckDB and Polars over DIR/*.parquet."""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
from conftest import direct_run, table_matrix

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
