"""The Python API: every kind of frame scores to the same numbers as the CLI, and comes back as its own kind."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import imputing_feeds, imputing_table, mixed_table, run_feeds
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


FRAME_KINDS = [
    ("polars", pl.from_arrow, lambda df: df.to_arrow()),
    ("lazy", lambda t: pl.from_arrow(t).lazy(), lambda lf: lf.collect().to_arrow()),
    ("lazy-streaming", lambda t: pl.from_arrow(t).lazy(), lambda lf: lf.collect(engine="streaming").to_arrow()),
    ("arrow", lambda t: t, lambda t: t),
    ("pandas", lambda t: t.to_pandas(), lambda df: pa.Table.from_pandas(df, preserve_index=False)),
]


@pytest.mark.parametrize(("kind", "convert", "back"), FRAME_KINDS)
def test_nulls_reach_an_imputing_input_as_nan_on_every_path(imputing_model, kind, convert, back):
    """With on_null="fill" and no fill value, nulls in a and b (an Imputer reads them) are NaN, as in training;
    c, which the model does not impute, gets 0. The same numbers as onnxruntime fed that way."""
    table = imputing_table(300, seed=5).set_column(3, "c", pa.array([None, *np.ones(299)], pa.float64()))
    got = back(batchscore.score(convert(table), imputing_model, on_null="fill", batch_size=128))
    feeds = imputing_feeds(table, np.nan)
    feeds["c"][0, 0] = 0.0
    labels, probs = run_feeds(imputing_model, feeds)
    assert got["prediction"].to_pylist() == labels.tolist()
    np.testing.assert_array_equal(got["prob_1"].to_numpy(), probs[:, 1])


@pytest.mark.parametrize(("kind", "convert", "back"), FRAME_KINDS)
def test_nan_fill_for_an_integer_input_fails_only_where_it_has_nulls(imputing_model, kind, convert, back):
    """One rule for eager frames, lazy frames and the CLI: fill_value=nan is fine until an int64 input has a null."""
    table = imputing_table(50, seed=6)
    back(batchscore.score(convert(table), imputing_model, on_null="fill", fill_value=float("nan")))  # n has no null
    holes = table.set_column(4, "n", pa.array([None, *range(49)], pa.int64()))
    with pytest.raises(JobSpecError, match=r"--fill-value nan cannot fill model input n: tensor\(int64\) \[N, 1\]"):
        back(batchscore.score(convert(holes), imputing_model, on_null="fill", fill_value=float("nan")))


def test_pandas_nan_is_a_null(imputing_model):
    """pandas marks a missing float as NaN (df.isna() is True), so NaN in a pandas frame counts as a null and follows
    on_null, as it does when pandas writes the frame to Parquet. In Polars, Arrow and Parquet NaN is a value."""
    frame = imputing_table(20, seed=7, nulls=False).to_pandas()
    frame.loc[3, "c"] = np.nan
    with pytest.raises(NullValuesError, match=r"'c' has 1 null value\(s\) in the pandas DataFrame"):
        batchscore.score(frame, imputing_model)
    as_polars = batchscore.score(pl.from_pandas(frame, nan_to_null=False), imputing_model)  # NaN stays a value
    assert as_polars["prediction"].null_count() == 0


@pytest.mark.parametrize(
    ("column", "needle"),
    [
        (
            ["1.5", 2.0, None, 3.0],
            r"pandas column 'c' \(object\) cannot be converted to Arrow: Expected bytes",
        ),
        ([{"x": 1}, 2.0, 3.0, 4.0], r"pandas column 'c' \(object\) cannot be converted to Arrow"),
    ],
)
def test_a_pandas_column_of_mixed_objects_is_a_schema_error(imputing_model, column, needle):
    frame = imputing_table(4, nulls=False).to_pandas()
    frame["c"] = pd.Series(column, dtype=object)
    with pytest.raises(batchscore.SchemaMismatchError, match=needle) as raised:
        batchscore.score(frame, imputing_model)
    assert raised.value.exit_code == 3 and "astype(str)" in str(raised.value)
