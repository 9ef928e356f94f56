"""Models from every converter a team uses score like a direct onnxruntime run, from the CLI and the Python API.

skl2onnx ColumnTransformer (float, int64 and string inputs), onnxmltools LightGBM
and XGBoost classifiers, and a torch.onnx MLP (committed fixture, re-exported when
torch is installed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import FEATURES, TORCH_MLP, direct_run, make_table, mixed_feeds, mixed_table, run_feeds, table_matrix
from typer.testing import CliRunner

import batchscore
from batchscore.cli import app


def cli_score(data: Path, model: Path, out: Path, *args: str) -> pa.Table:
    """Run `batchscore score` in-process and read what it committed."""
    result = CliRunner().invoke(app, ["score", str(data), "--model", str(model), "--out", str(out), "-q", *args])
    assert result.exit_code == 0, result.output
    return pq.read_table(sorted(out.glob("*.parquet")))


def zipmap_probs(probs: list | np.ndarray) -> np.ndarray:
    if isinstance(probs, list):  # ZipMap: a list of {label: probability}
        return np.array([[row[k] for k in row] for row in probs], dtype=np.float32)
    return probs


def test_column_transformer_with_unknown_categories(mixed_model, tmp_path):
    table = mixed_table(600, seed=3)
    assert {"berlin", "lima"} <= set(table["city"].to_pylist())  # never seen in training
    pq.write_table(table, tmp_path / "in.parquet")
    got = cli_score(tmp_path / "in.parquet", mixed_model, tmp_path / "out", "--keep", "id")
    label, probs = run_feeds(mixed_model, mixed_feeds(table))
    assert got.column_names == ["id", "prediction", "prob_0", "prob_1"]
    assert got["prediction"].to_pylist() == label.tolist()
    np.testing.assert_array_equal(np.column_stack([got["prob_0"], got["prob_1"]]), zipmap_probs(probs))
    api = batchscore.score(table, mixed_model)
    assert api.column_names == [*table.column_names, "prediction", "prob_0", "prob_1"]
    assert api.select(got.column_names).equals(got)


@pytest.mark.parametrize("name", ["lgbm_binary", "lgbm_multi", "xgb_binary", "xgb_multi"])
def test_boosted_classifiers(boosted_models, tmp_path, name):
    # LightGBM: label [1] declared, ZipMap probabilities; XGBoost: plain tensors. Both int64 labels.
    table = make_table(700, seed=5)
    pq.write_table(table, tmp_path / "in.parquet")
    model = boosted_models[name]
    got = cli_score(tmp_path / "in.parquet", model, tmp_path / "out", "--keep", "id,segment")
    label, probs = direct_run(model, table_matrix(tmp_path / "in.parquet"))
    probs = zipmap_probs(probs)
    prob_cols = [c for c in got.column_names if c.startswith("prob_")]
    assert prob_cols == [f"prob_{i}" for i in range(probs.shape[1])]
    assert got["prediction"].to_pylist() == label.tolist()
    np.testing.assert_array_equal(np.column_stack([got[c] for c in prob_cols]), probs)
    api = batchscore.score(table, model, keep=["id", "segment"])
    assert api.equals(got)


@pytest.mark.parametrize("name", ["lgbm_binary", "xgb_binary"])
def test_threshold_and_score_on_boosted_binary(boosted_models, tmp_path, name):
    table = make_table(500, seed=6)
    pq.write_table(table, tmp_path / "in.parquet")
    model = boosted_models[name]
    args = ["--keep", "id", "--threshold", "0.7", "--with-score", "--output", "prediction=flag"]
    got = cli_score(tmp_path / "in.parquet", model, tmp_path / "out", *args, "--output", "score=confidence")
    _, probs = direct_run(model, table_matrix(tmp_path / "in.parquet"))
    positive = zipmap_probs(probs)[:, 1]
    assert got.column_names == ["id", "flag", "confidence"]
    assert got["flag"].to_pylist() == np.where(positive >= 0.7, 1, 0).tolist()
    np.testing.assert_array_equal(got["confidence"].to_numpy(), np.where(positive >= 0.7, positive, 1 - positive))
    assert 0 < sum(got["flag"].to_pylist()) < 500


def test_torch_mlp_with_dynamic_batch(tmp_path):
    table = make_table(300, seed=7)
    pq.write_table(table, tmp_path / "in.parquet")
    got = cli_score(tmp_path / "in.parquet", TORCH_MLP, tmp_path / "out", "--keep", "id", "--batch-size", "128")
    (logits,) = direct_run(TORCH_MLP, table_matrix(tmp_path / "in.parquet"))
    assert got.column_names == ["id", "logits"]  # a generic model: one list column per output
    np.testing.assert_array_equal(np.array(got["logits"].to_pylist(), dtype=np.float32), logits)
    api = batchscore.score(table, TORCH_MLP, keep=["id"], batch_size=128)
    assert api.equals(got)


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")
def test_torch_fixture_matches_a_fresh_export(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    import sys

    sys.path.insert(0, str(TORCH_MLP.parent))
    from make_torch_mlp import build, export

    export(tmp_path / "fresh.onnx")
    x = table_matrix_from(make_table(50, seed=8))
    (fresh,) = direct_run(tmp_path / "fresh.onnx", x)
    (committed,) = direct_run(TORCH_MLP, x)
    with torch.no_grad():
        eager = build()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(committed, fresh, rtol=1e-6, atol=1e-6)  # else: re-run make_torch_mlp.py
    np.testing.assert_allclose(fresh, eager, rtol=1e-5, atol=1e-6)


def table_matrix_from(table: pa.Table) -> np.ndarray:
    return np.column_stack([table[c].to_numpy() for c in FEATURES]).astype(np.float32)
