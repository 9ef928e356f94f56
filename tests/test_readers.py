"""What common readers see in an output folder: complete, while a run is live, and after a run was killed.

Nothing they list may be a partial part, a part of a failed run, or a file that is not a part. Polars'
``scan_parquet(DIR)`` refuses any folder with files of several extensions (the manifest is ``.json``), so
README tells Polars users to glob; this test keeps that advice true.
"""

from __future__ import annotations

import duckdb
import pandas as pd
import polars as pl
import pyarrow.dataset as ds
import pytest
from conftest import make_table, write_files

import batchscore
from batchscore import storage

KEEP = ("id", "segment")


def readers(out, *, partitioned: bool):
    """Reader name -> a function giving the row count it reads from ``out``."""
    glob = f"{out}/*/*.parquet" if partitioned else f"{out}/*.parquet"
    return {
        "duckdb DIR": lambda: duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}')").fetchall()[0][0],
        "duckdb glob": lambda: duckdb.sql(f"SELECT count(*) FROM read_parquet('{glob}')").fetchall()[0][0],
        "duckdb **": lambda: duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}/**/*.parquet')").fetchall()[0][0],
        "polars glob": lambda: pl.scan_parquet(glob).select(pl.len()).collect().item(),
        "polars **": lambda: pl.scan_parquet(f"{out}/**/*.parquet").select(pl.len()).collect().item(),
        "pandas DIR": lambda: len(pd.read_parquet(out)),
        "pyarrow dataset DIR": lambda: ds.dataset(out, partitioning="hive").count_rows(),
    }


def check(out, rows: int | set[int], *, partitioned: bool) -> None:
    for name, count in readers(out, partitioned=partitioned).items():
        got = count()
        assert got in (rows if isinstance(rows, set) else {rows}), name
    with pytest.raises(pl.exceptions.InvalidOperationError, match="different file extensions"):
        pl.scan_parquet(out).collect()


def spec(tmp_path, model, **changes):
    base = batchscore.JobSpec(inputs=(str(tmp_path / "in"),), model=str(model), out=str(tmp_path / "out"), keep=KEEP)
    return base.replace(**changes)


@pytest.mark.parametrize("partitioned", [False, True], ids=["flat", "partitioned"])
def test_complete_running_and_killed_outputs_are_safe_to_read(models, tmp_path, monkeypatch, partitioned):
    files = write_files(
        tmp_path / "in", [make_table(300, seed=i, start_id=i * 300) for i in range(4)], row_group_size=50
    )
    options = {"partition_by": ("segment",)} if partitioned else {}
    out = tmp_path / "out"
    batchscore.run(spec(tmp_path, models["logreg"], **options))
    check(out, 1200, partitioned=partitioned)  # complete

    # running: an overwrite of 3 files, looked at after every batch (parts being staged, then published)
    files[3].unlink()
    seen = []

    def look(progress):
        check(out, 1200, partitioned=partitioned)  # the old output, whole, until the commit
        seen.append(progress)

    batchscore.run(spec(tmp_path, models["forest"], mode="overwrite", batch_size=50, **options), progress=look)
    assert len(seen) > 10
    check(out, 900, partitioned=partitioned)

    # killed: a crash after 2 of 3 parts are staged, and one inside the publish window
    for at_call, rows in (("sync", {900}), ("move_to", {900, 600, 1200})):
        real = getattr(storage.Location, at_call)
        count = {"n": 0}

        def crash(self, *args, _real=real, _count=count, **kwargs):
            _count["n"] += 1
            if _count["n"] == 3:
                raise KeyboardInterrupt  # stands for kill -9 here
            return _real(self, *args, **kwargs)

        with monkeypatch.context() as m:
            m.setattr(storage.Location, at_call, crash)
            with pytest.raises(KeyboardInterrupt):
                batchscore.run(spec(tmp_path, models["logreg"], mode="overwrite", batch_size=50, **options))
        check(out, rows, partitioned=partitioned)
        batchscore.run(spec(tmp_path, models["logreg"], mode="overwrite", batch_size=50, **options))  # finishes it
        check(out, 900, partitioned=partitioned)
