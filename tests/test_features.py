"""Columns -> typed input tensors: exact conversions, refused ones, strings, vector columns and their nulls."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pyarrow as pa
import pytest
from conftest import mixed_table, run_feeds, typed_table

import batchscore
from batchscore import NullValuesError, SchemaMismatchError

TYPED_INPUTS = ["i64", "i32", "u8", "flag", "f64", "name"]


def echo(helper_models, table: pa.Table, **options) -> pa.Table:
    """Score with the typed model, whose outputs are its inputs: what the model was fed (keep=[]: outputs only)."""
    return batchscore.score(table, helper_models["typed"], keep=[], **options)


def test_each_input_gets_its_declared_type_and_shape(helper_models):
    table = typed_table(50)
    got = echo(helper_models, table)
    assert got.column_names == [f"out_{n}" for n in TYPED_INPUTS]
    assert [f.type for f in got.schema] == [pa.int64(), pa.int32(), pa.uint8(), pa.bool_(), pa.float64(), pa.string()]
    for name in TYPED_INPUTS:
        assert got[f"out_{name}"].to_pylist() == pytest.approx(table[name].to_pylist())
    feeds = {
        "i64": table["i64"].to_numpy(),  # declared [N]
        "i32": table["i32"].to_numpy().astype(np.int32).reshape(-1, 1),
        "u8": table["u8"].to_numpy().astype(np.uint8).reshape(-1, 1),
        "flag": table["flag"].to_numpy(zero_copy_only=False).reshape(-1, 1),
        "f64": table["f64"].to_numpy().astype(np.float64).reshape(-1, 1),
        "name": table["name"].to_numpy(zero_copy_only=False).reshape(-1, 1),
    }
    direct = run_feeds(helper_models["typed"], feeds)
    assert got["out_f64"].to_numpy().tolist() == direct[4].ravel().tolist()


@pytest.mark.parametrize(
    ("column", "values", "input_type"),
    [
        ("i64", pa.array([1.0, -2.0, 3.0]), pa.int64()),  # whole floats into int64
        ("i64", pa.array([1, 2, 3], pa.uint64()), pa.int64()),  # uint64 within range
        ("u8", pa.array([0, 255, 7], pa.int64()), pa.uint8()),  # int64 within 0..255
        ("flag", pa.array([0, 1, 1], pa.int8()), pa.bool_()),  # 0/1 integers into bool
        ("i32", pa.array([True, False, True]), pa.int32()),  # bools into int32
        ("f64", pa.array([Decimal("1.25"), Decimal("2.5"), Decimal("-3")], pa.decimal128(6, 2)), pa.float64()),
        ("name", pa.array(["a", "b", "a"]).dictionary_encode(), pa.string()),  # categorical strings
        ("name", pa.array(["a", "b", "c"], pa.large_string()), pa.string()),
    ],
)
def test_conversions_that_keep_values(helper_models, column, values, input_type):
    table = typed_table(3).set_column(TYPED_INPUTS.index(column), column, values)
    got = echo(helper_models, table)[f"out_{column}"]
    assert got.type == input_type
    assert got.to_pylist() == values.cast(input_type).to_pylist()


@pytest.mark.parametrize(
    ("column", "values", "needle"),
    [
        # a float with a fraction into an int64 input
        ("i64", [1.0, 2.5, 3.75], "column 'i64' has 2 value(s) that are not whole numbers (e.g. 2.5)"),
        # NaN cannot be an integer
        ("i64", [1.0, float("nan"), 3.0], "has 1 value(s) that are not whole numbers"),
        # int64 beyond int32
        ("i32", [1, 2**40, 3], "column 'i32' has 1 value(s) outside -2147483648..2147483647"),
        # a negative number into uint8
        ("u8", [-1, 2, 3], "column 'u8' has 1 value(s) outside 0..255 (e.g. -1)"),
        # 2 is not a bool
        ("flag", [0, 1, 2], "column 'flag' has 1 value(s) outside 0..1"),
    ],
)
def test_conversions_that_would_change_values_are_refused(helper_models, column, values, needle):
    table = typed_table(3).set_column(TYPED_INPUTS.index(column), column, pa.array(values))
    with pytest.raises(SchemaMismatchError) as caught:
        echo(helper_models, table)
    message = str(caught.value)
    assert needle in message
    assert f"model input {column!r}" in message and "in the Table" in message


def test_string_nulls(helper_models):
    table = typed_table(4).set_column(5, "name", pa.array(["a", None, "b", None]))
    with pytest.raises(NullValuesError, match=r"'name' has 2 null value\(s\)"):
        echo(helper_models, table)
    assert echo(helper_models, table, on_null="fill")["out_name"].to_pylist() == ["a", "", "b", ""]
    skipped = echo(helper_models, table, on_null="skip")
    assert skipped["out_i64"].null_count == 2 and skipped["out_name"].to_pylist() == ["a", None, "b", None]


def test_integer_nulls_fill_with_the_fill_value(helper_models):
    table = typed_table(3).set_column(0, "i64", pa.array([5, None, 7]))
    assert echo(helper_models, table, on_null="fill", fill_value=9)["out_i64"].to_pylist() == [5, 9, 7]


def norms(values) -> list[float]:
    return [float(np.sum(np.square(np.asarray(v, dtype=np.float32)))) for v in values]


@pytest.mark.parametrize(
    "vector_type",
    [pa.list_(pa.float32()), pa.large_list(pa.float64()), pa.list_(pa.float32(), 4), pa.list_(pa.int32())],
)
def test_vector_columns_feed_a_matrix_input(helper_models, vector_type):
    rows = [[1, 2, 3, 4], [0.5, 0, 0, 0], [-1, -1, 2, 2]]
    if pa.types.is_integer(vector_type.value_type):
        rows[1] = [5, 0, 0, 0]
    table = pa.table({"id": [1, 2, 3], "emb": pa.array(rows, vector_type)})
    got = batchscore.score(table, helper_models["vector"], keep=["id"])
    (want,) = run_feeds(helper_models["vector"], {"emb": np.array(rows, dtype=np.float32)})
    assert got["prediction"].to_pylist() == want.tolist() == norms(rows)


@pytest.mark.parametrize(
    ("rows", "needle"),
    [
        # ragged: two rows too short, one too long
        (
            [[1, 2, 3, 4], [1, 2, 3], [1], [1, 2, 3, 4, 5]],
            "has 3 row(s) whose length is not 4 (lengths found: 1, 3, 5)",
        ),
        # every row of the wrong length
        ([[1, 2]] * 5, "has 5 row(s) whose length is not 4 (lengths found: 2)"),
    ],
)
def test_vector_rows_of_the_wrong_length_are_counted(helper_models, rows, needle):
    table = pa.table({"emb": pa.array(rows, pa.list_(pa.float32()))})
    with pytest.raises(SchemaMismatchError) as caught:
        batchscore.score(table, helper_models["vector"], keep=[])
    assert needle in str(caught.value) and "list column 'emb'" in str(caught.value)


def test_vector_nulls(helper_models):
    rows = [[1, 1, 1, 1], None, [2, None, 2, 2], [1, 0, 0, 0]]
    table = pa.table({"emb": pa.array(rows, pa.list_(pa.float32()))})
    with pytest.raises(NullValuesError, match=r"'emb' has 2 null value\(s\)"):  # a null row and a null element
        batchscore.score(table, helper_models["vector"], keep=[])
    skipped = batchscore.score(table, helper_models["vector"], keep=[], on_null="skip")
    assert skipped["prediction"].to_pylist() == [4.0, None, None, 1.0]
    filled = batchscore.score(table, helper_models["vector"], keep=[], on_null="fill", fill_value=3.0)
    assert filled["prediction"].to_pylist() == [4.0, 36.0, 21.0, 1.0]


def test_vector_column_sliced_batches(helper_models):
    table = mixed_table(1000, seed=2).select(["id", "emb"])
    got = batchscore.score(table, helper_models["vector"], keep=["id"], batch_size=77)  # slices of the list array
    (want,) = run_feeds(helper_models["vector"], {"emb": np.array(table["emb"].to_pylist(), dtype=np.float32)})
    np.testing.assert_array_equal(got["prediction"].to_numpy(), want)


# --- plain numeric columns read straight from their Arrow buffers (issue 15) ---


def fed(models, table: pa.Table, **options) -> np.ndarray:
    """The float32 matrix the generic model was fed (its 'doubled' output halved), null rows as NaN."""
    got = batchscore.score(table, models["generic"], keep=[], **options)
    rows = [np.full(len(FEATURES_6), np.nan) if r is None else np.asarray(r) / 2 for r in got["doubled"].to_pylist()]
    return np.array(rows, dtype=np.float32)


FEATURES_6 = [f"f{i}" for i in range(6)]


def with_nulls(rng: np.random.Generator, values: np.ndarray, arrow_type: pa.DataType) -> pa.Array:
    """``values`` as ``arrow_type``, about a fifth of them null."""
    return pa.array(values, arrow_type, mask=rng.random(len(values)) < 0.2)


@pytest.mark.parametrize("on_null", ["fill", "skip"])
@pytest.mark.parametrize("batch_size", [7, 1000])  # sliced batches: buffers read at an offset
def test_plain_columns_are_fed_as_arrow_converts_them(models, on_null, batch_size):
    rng = np.random.default_rng(4)
    n = 300
    columns = {  # every plain numeric type, with nulls, into a float32 input
        "f0": with_nulls(rng, rng.normal(size=n), pa.float64()),
        "f1": with_nulls(rng, rng.normal(size=n).astype(np.float32), pa.float32()),
        "f2": with_nulls(rng, rng.integers(-5, 5, n), pa.int64()),
        "f3": with_nulls(rng, rng.integers(0, 200, n), pa.uint8()),
        "f4": pa.array(rng.integers(-(2**30), 2**30, n), pa.int32()),  # no nulls
        "f5": with_nulls(rng, rng.normal(size=n).astype(np.float16), pa.float16()),
    }
    table = pa.table(columns)
    got = fed(models, table, on_null=on_null, fill_value=-7.5, batch_size=batch_size)
    any_null = np.zeros(n, dtype=bool)
    for name in FEATURES_6:
        any_null |= table[name].is_null().to_numpy(zero_copy_only=False)
    for j, name in enumerate(FEATURES_6):
        column = table[name].combine_chunks()
        present = ~column.is_null().to_numpy(zero_copy_only=False)
        want = column.fill_null(0).to_numpy(zero_copy_only=False).astype(np.float32)
        scored = present if on_null == "fill" else ~any_null
        np.testing.assert_array_equal(got[scored, j], want[scored])
        if on_null == "fill":
            assert (got[~present, j] == -7.5).all()
    if on_null == "skip":
        assert np.isnan(got[any_null]).all()


def under_nulls(values: list[float], nulls: list[bool]) -> pa.Array:
    """A float64 array whose buffer keeps ``values`` even in the slots marked null."""
    bitmap = np.packbits(~np.array(nulls), bitorder="little")
    data = np.array(values, dtype=np.float64)
    return pa.Array.from_buffers(pa.float64(), len(values), [pa.py_buffer(bitmap), pa.py_buffer(data)])


def test_a_huge_value_under_a_null_is_not_an_overflow(models):
    table = pa.table({name: pa.array([1.0, 2.0, 3.0]) for name in FEATURES_6})
    table = table.set_column(2, "f2", under_nulls([1.0, 1e300, 3.0], [False, True, False]))
    got = fed(models, table, on_null="fill", fill_value=0.5)
    np.testing.assert_array_equal(got[:, 2], [1.0, 0.5, 3.0])
    assert fed(models, table, on_null="skip")[:, 2][[0, 2]].tolist() == [1.0, 3.0]


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ([1.0, float("nan"), float("inf"), -float("inf")], False),  # NaN and infinities stay what they are
        ([1.7e38] * 4, False),  # each fits float32 (and doubled), though their float32 sum does not
        ([1.0, 1e39, float("nan"), 2.0], True),  # one overflow among NaNs
    ],
)
def test_overflow_check_with_nan_inf_and_large_sums(models, values, error):
    table = pa.table({name: pa.array([1.0] * len(values)) for name in FEATURES_6}).set_column(4, "f4", pa.array(values))
    if error:
        with pytest.raises(SchemaMismatchError, match=r"column 'f4' has 1 value\(s\) too large"):
            fed(models, table)
        table = table.set_column(0, "f0", pa.array([None, 1.0, 1.0, 1.0], pa.float64()))
        with pytest.raises(SchemaMismatchError, match=r"column 'f4' has 1 value\(s\) too large"):
            fed(models, table, on_null="skip")  # also with nulls elsewhere
    else:
        np.testing.assert_array_equal(fed(models, table)[:, 4], np.array(values, dtype=np.float32))
