"""The per-batch path: fixed batch sizes, padding, and rows in == rows out whatever the batching."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import FEATURES, make_table, run_feeds, table_matrix
from hypothesis import given, settings
from hypothesis import strategies as st

import batchscore
from batchscore import JobSpec


def fixed_batch_expected(model, x: np.ndarray, size: int = 4) -> np.ndarray:
    """A hand-written loop: chunks of exactly `size` rows, the last one zero-padded, padding dropped."""
    out = []
    for start in range(0, len(x), size):
        chunk = x[start : start + size]
        padded = np.concatenate([chunk, np.zeros((size - len(chunk), x.shape[1]), x.dtype)])
        out.append(run_feeds(model, {"x": padded})[0][: len(chunk)])
    return np.concatenate(out)


@settings(max_examples=12, deadline=None)
@given(rows=st.integers(min_value=0, max_value=23), batch_size=st.integers(min_value=1, max_value=9))
def test_fixed_batch_model_gets_exactly_its_batch(helper_models, rows, batch_size):
    table = make_table(rows, seed=rows)
    got = batchscore.score(table, helper_models["fixed4"], keep=["id"], batch_size=batch_size)
    assert got.num_rows == rows and got["id"].to_pylist() == list(range(rows))
    if rows:
        x = np.column_stack([table[c].to_numpy() for c in FEATURES]).astype(np.float32)
        np.testing.assert_array_equal(
            np.array(got["y"].to_pylist(), np.float32), fixed_batch_expected(helper_models["fixed4"], x)
        )


def test_fixed_batch_through_the_pipeline(helper_models, tmp_path):
    path = tmp_path / "in" / "part-0.parquet"
    path.parent.mkdir()
    pq.write_table(make_table(10, seed=1), path)
    spec = JobSpec(inputs=(str(path),), model=str(helper_models["fixed4"]), out=str(tmp_path / "out"), keep=("id",))
    report = batchscore.run(spec)
    got = pq.read_table(tmp_path / "out" / "part-00000.parquet")
    assert report.rows_written == got.num_rows == 10
    expected = fixed_batch_expected(helper_models["fixed4"], table_matrix(path))
    np.testing.assert_array_equal(np.array(got["y"].to_pylist(), np.float32), expected)


def test_padding_repeats_the_last_row(helper_models):
    from batchscore.scorer import _pad

    tensor = np.array([["a"], ["b"], ["c"]], dtype=object)
    assert _pad(tensor, 5).tolist() == [["a"], ["b"], ["c"], ["c"], ["c"]]  # valid input, unlike zeros or ""
    assert _pad(tensor, 3) is tensor


@pytest.mark.parametrize("rows", [0, 1])
def test_tiny_frames(models, rows):
    got = batchscore.score(make_table(rows), models["logreg"], keep=["id", "segment"])
    assert got.num_rows == rows
    assert got.schema.field("prediction").type == pa.int64()
