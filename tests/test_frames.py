"""The Python API: every kind of frame scores to the same numbers as the CLI, and comes back as its own kind."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import mixed_table
from typer.testing import CliRunner

import batchscore
from batchscore import JobSpecError, Model, NullValuesError
from batchscore.cli import app

PREDICTIONS = ["prediction", "prob_0", "prob_1"]


@pytest.fixture
def mixed_cli(mixed_model, tmp_path) -> tuple[pa.Table, pa.Table]:
    """The mixed data, and what `batchscore score` makes of it."""
    table = mixed_table(1000, seed=11)
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=300)
    args = ["score", str(tmp_path / "in.parquet"), "-m", str(mixed_model), "-o", str(tmp_path / "out"), "-q"]
    result = CliRunner().invoke(app, [*args, "--keep", "id"])
    assert result.exit_code == 0, result.output
    return table, pq.read_table(tmp_path / "out" / "part-00000.parquet")


@pytest.mark.parametrize(
    ("kind", "convert", "back"),
    [
        ("polars", pl.from_arrow, lambda df: df.to_arrow()),
        ("lazy", lambda t: pl.from_arrow(t).lazy(), lambda lf: lf.collect().to_arrow()),
        ("lazy-streaming", lambda t: pl.from_arrow(t).lazy(), lambda lf: lf.collect(engine="streaming").to_arrow()),
        ("pandas", lambda t: t.to_pandas(), lambda df: pa.Table.from_pandas(df, preserve_index=False)),
        ("arrow", lambda t: t, lambda t: t),
    ],
)
def test_every_frame_kind_matches_the_cli(mixed_model, mixed_cli, kind, convert, back):
    table, want = mixed_cli
    frame = convert(table)
    scored = batchscore.score(frame, mixed_model, batch_size=256)
    assert type(scored) is type(frame)  # a LazyFrame stays lazy, a pandas frame stays pandas
    got = back(scored)
    assert got.column_names == [*table.column_names, *PREDICTIONS]
    assert got["id"].to_pylist() == table["id"].to_pylist()
    for col in PREDICTIONS:
        np.testing.assert_array_equal(got[col].to_numpy(), want[col].to_numpy())


def test_a_path_gives_a_polars_frame_and_a_loaded_model_is_reused(mixed_model, mixed_cli, tmp_path):
    _, want = mixed_cli
    model = Model(mixed_model, device="cpu")
    from_path = model.score(tmp_path / "in.parquet", keep=["id"])
    assert isinstance(from_path, pl.DataFrame)
    assert from_path.to_arrow().equals(want)
    again = batchscore.score(pl.read_parquet(tmp_path / "in.parquet"), model, keep=["id"])
    assert again.equals(from_path)


def test_lazy_frame_is_not_scored_until_collected(mixed_model):
    lazy = pl.from_arrow(mixed_table(50)).lazy().filter(pl.col("age") > 30)
    scored = batchscore.score(lazy, mixed_model, with_score=True, keep=["id"])
    assert scored.collect_schema().names() == ["id", *PREDICTIONS, "score"]
    df = scored.collect()
    assert df.height == lazy.collect().height and df["score"].min() >= 0.5


def test_pandas_index_is_kept(mixed_model):
    frame = mixed_table(20).to_pandas()
    frame.index = pd.RangeIndex(100, 120)
    scored = batchscore.score(frame, mixed_model)
    assert list(scored.index) == list(range(100, 120))
    assert scored["prediction"].notna().all()


@pytest.mark.parametrize(
    ("options", "error", "needle"),
    [
        ({"mode": "overwrite"}, JobSpecError, "unknown option(s) mode"),  # a CLI-only option
        ({"input_columns": {"age": "city"}}, batchscore.SchemaMismatchError, "must be numeric"),  # checked up front
        ({"prediction_col": "income"}, JobSpecError, "'income' would overwrite"),  # every column is kept
    ],
)
def test_api_errors_are_the_cli_errors(mixed_model, options, error, needle):
    with pytest.raises(error, match=needle.replace("(", r"\(").replace(")", r"\)")):
        batchscore.score(mixed_table(10), mixed_model, **options)


def test_nulls_are_counted_before_scoring(mixed_model):
    table = mixed_table(10)
    table = table.set_column(3, "city", pa.array(["rome", None] * 5))
    with pytest.raises(NullValuesError, match=r"'city' has 5 null value\(s\) in the Table"):
        batchscore.score(table, mixed_model)
    filled = batchscore.score(table, mixed_model, on_null="fill")  # strings fill with "": an unseen category
    blank = batchscore.score(table.set_column(3, "city", pa.array(["rome", ""] * 5)), mixed_model)
    assert filled.equals(blank.set_column(3, "city", table["city"]))


def test_device_goes_to_the_model_not_to_score(mixed_model):
    with pytest.raises(JobSpecError, match=r"pass them to batchscore.Model"):
        batchscore.score(mixed_table(5), Model(mixed_model, device="cpu"), device="cpu")


def test_something_else_is_refused(mixed_model):
    with pytest.raises(JobSpecError, match=r"cannot score a builtins.list"):
        batchscore.score([1, 2], mixed_model)
