"""Which columns feed which model input: the rules, and every mapping error, raised before a row is scored."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import FEATURES, make_table, mixed_table, save, typed_table
from onnx import TensorProto, helper

from batchscore import JobSpec, JobSpecError, ModelError, NullValuesError, SchemaMismatchError
from batchscore.pipeline import prepare


def plan(data: pa.Table, model, tmp_path, **options):
    tmp_path.mkdir(parents=True, exist_ok=True)
    pq.write_table(data, tmp_path / "part-0.parquet")
    spec = JobSpec(inputs=(str(tmp_path / "part-0.parquet"),), model=str(model), out=str(tmp_path / "out"), **options)
    return prepare(spec).plan


def test_each_input_takes_the_column_of_its_name(mixed_model, tmp_path):
    got = plan(mixed_table(10), mixed_model, tmp_path)
    assert [(b.name, b.columns) for b in got.inputs] == [
        ("income", ("income",)),
        ("age", ("age",)),
        ("city", ("city",)),
    ]
    assert got.keep == ("id", "emb")  # every other column passes through
    assert got.inputs[1].describe(prepare_file(tmp_path)) == "tensor(int64) [N, 1] <- age (int32)"


def prepare_file(tmp_path):
    from batchscore.reader import scan

    return scan([str(tmp_path / "part-0.parquet")])[0]


def test_input_option_overrides_the_name(mixed_model, tmp_path):
    data = mixed_table(10).rename_columns(["id", "salary", "age", "town", "emb"])
    got = plan(data, mixed_model, tmp_path, input_columns={"income": "salary", "city": ["town"]}, keep=("id",))
    assert [b.columns for b in got.inputs] == [("salary",), ("age",), ("town",)]
    assert got.features == ("salary", "age", "town")


def test_several_columns_or_a_list_column_feed_a_matrix_input(models, helper_models, tmp_path):
    reordered = list(reversed(FEATURES))
    got = plan(make_table(10), models["logreg"], tmp_path, input_columns={"X": reordered}, keep=("id",))
    assert got.inputs[0].columns == tuple(reordered) and not got.inputs[0].vector
    vector = plan(mixed_table(10), helper_models["vector"], tmp_path / "v", keep=("id",))
    assert vector.inputs[0].columns == ("emb",) and vector.inputs[0].vector


def image_model(tmp_path):
    x = helper.make_tensor_value_info("img", TensorProto.FLOAT, [None, 3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3, 4])
    graph = helper.make_graph([helper.make_node("Identity", ["img"], ["y"])], "img", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return save(model, tmp_path / "img.onnx")


def fixed_size(width: int) -> pa.Table:
    values = np.ones((10, width), dtype=np.float32)
    return mixed_table(10).set_column(4, "emb", pa.FixedSizeListArray.from_arrays(values.ravel(), width))


def with_null_cities(table: pa.Table) -> pa.Table:
    return table.set_column(3, "city", pa.array(["rome", None] * (table.num_rows // 2)))


@pytest.mark.parametrize(
    ("model", "data", "options", "error", "needle"),
    [
        # --input names an input the model does not have
        (
            "mixed",
            None,
            {"input_columns": {"salary": "income"}},
            JobSpecError,
            "no such input (its inputs: income, age, city)",
        ),
        # --features is ambiguous for a model with several inputs
        ("mixed", None, {"features": ("income", "age")}, JobSpecError, "--features feeds a single-input model"),
        # an input with no column of its name and no --input
        ("mixed", "no_age", {}, SchemaMismatchError, "model input(s) 'age' have no column of the same name"),
        # --input points at a column that is not there
        ("mixed", None, {"input_columns": {"age": "years"}}, SchemaMismatchError, "'years' not found in"),
        # a string column into a numeric input
        ("mixed", None, {"input_columns": {"age": "city"}}, SchemaMismatchError, "column 'city' in"),
        # a numeric column into a string input
        ("mixed", None, {"input_columns": {"city": "age"}}, SchemaMismatchError, "wants strings"),
        # two columns into a [N, 1] input
        (
            "mixed",
            None,
            {"input_columns": {"age": ("age", "income")}},
            SchemaMismatchError,
            "wants 1 features, but --input age= lists 2",
        ),
        # too few --features for the model's F
        (
            "logreg",
            "plain",
            {"features": tuple(FEATURES[:4])},
            SchemaMismatchError,
            "wants 6 features, but the --features list has 4",
        ),
        # a list column into a [N] input
        (
            "typed",
            "typed",
            {"input_columns": {"i64": "emb"}},
            SchemaMismatchError,
            "can only feed a [rows, features] input, but model input i64",
        ),
        # a fixed-size list of the wrong size
        ("vector", "fixed3", {}, SchemaMismatchError, "wants 4 values per row, but the column holds 3"),
        # --fill-value that an int64 input with nulls cannot hold
        (
            "mixed",
            "null_age",
            {"on_null": "fill", "fill_value": 0.5},
            JobSpecError,
            "--fill-value 0.5 cannot fill model input age",
        ),
        # nulls found in the footer statistics, on_null=error
        ("mixed", "null_city", {}, NullValuesError, "'city' has 5 null value(s)"),
        # --threshold on a 3-class model
        (
            "logreg",
            "plain",
            {"threshold": 0.7, "keep": ("id", "segment")},
            JobSpecError,
            "needs a binary classifier, but",
        ),
        # --with-score on a regressor
        (
            "regressor",
            "plain",
            {"with_score": True, "keep": ("id", "segment")},
            JobSpecError,
            "--with-score needs a classifier",
        ),
        # --output names something the model does not make
        (
            "logreg",
            "plain",
            {"output_columns": {"labels": "x"}, "keep": ("id", "segment")},
            JobSpecError,
            "'labels' is neither an output column nor a model output",
        ),
        # --output renames onto a kept column
        (
            "logreg",
            "plain",
            {"output_columns": {"prediction": "id"}, "keep": ("id", "segment")},
            JobSpecError,
            "'id' would overwrite",
        ),
        # an input with three dimensions (an image)
        ("image", "plain", {}, ModelError, "has 3 dimensions"),
    ],
)
def test_mapping_errors(models, mixed_model, helper_models, tmp_path, model, data, options, error, needle):
    paths = {**models, **helper_models, "mixed": mixed_model, "image": image_model(tmp_path)}
    tables = {
        None: mixed_table(10),
        "no_age": mixed_table(10).drop_columns(["age"]),
        "plain": make_table(10),
        "typed": typed_table(10).append_column("emb", mixed_table(10)["emb"]),
        "fixed3": fixed_size(3),
        "null_city": with_null_cities(mixed_table(10)),
        "null_age": mixed_table(10).set_column(2, "age", pa.array([None, *range(9)], pa.int32())),
    }
    with pytest.raises(error) as caught:
        plan(tables[data], paths[model], tmp_path, **options)
    message = str(caught.value)
    assert needle in message
    assert "\n" not in message
    if issubclass(error, SchemaMismatchError | NullValuesError):
        assert "part-0.parquet" in message  # data errors name the file


def test_a_wide_table_gives_a_short_error_with_the_counts_and_the_first_names(models, tmp_path):
    """2,000 numeric columns into a 6-feature model: the counts and the first few names, not a 14 KB line."""
    wide = pa.table({f"c{i:04d}": pa.array(np.zeros(3)) for i in range(2000)})
    with pytest.raises(SchemaMismatchError) as raised:
        plan(wide, models["logreg"], tmp_path)
    message = str(raised.value)
    assert "wants 6 features, but the data has 2000 numeric feature columns" in message
    assert "(c0000, c0001, c0002, c0003, c0004, c0005, c0006, c0007, ... 1992 more)" in message
    assert len(message) < 500 and "\n" not in message
    zeros = pa.array(np.zeros(3))
    ids = pa.table({f"x{i}_id": zeros for i in range(20)} | {f: zeros for f in FEATURES})
    with pytest.raises(SchemaMismatchError, match=r"20 columns look like ids \('x0_id', 'x1_id', .* 12 more\)"):
        plan(ids, models["logreg"], tmp_path / "ids")
