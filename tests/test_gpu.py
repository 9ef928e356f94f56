"""The CUDA path: runs only where onnxruntime really activates CUDA; CI has no GPU and skips."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import direct_run, table_matrix

import batchscore
from batchscore import Model

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cuda_model_path(models):
    try:
        Model(str(models["logreg_zipmap"]), device="cuda")
    except batchscore.DeviceUnavailableError as exc:
        pytest.skip(f"no CUDA here: {exc}")
    return models["logreg_zipmap"]


def test_cuda_run_matches_cpu(cuda_model_path, dataset, tmp_path):
    files = dataset(files=2, rows=3000)
    spec = batchscore.JobSpec(
        inputs=(str(tmp_path / "in"),),
        model=str(cuda_model_path),
        out=str(tmp_path / "out"),
        keep=("id",),
        device="cuda",
        batch_size=1024,
    )
    report = batchscore.run(spec)
    assert report.provider == "CUDAExecutionProvider"
    got = batchscore.writer.read_metadata(str(tmp_path / "out" / "part-00000.parquet"))
    assert got["provider"] == "CUDAExecutionProvider"
    import pyarrow.parquet as pq

    table = pq.read_table(sorted((tmp_path / "out").glob("*.parquet")))
    x = np.concatenate([table_matrix(f) for f in files])
    labels, probs = direct_run(cuda_model_path, x)
    assert table["prediction"].to_pylist() == labels.tolist()
    want = np.array([[row[k] for k in sorted(row)] for row in probs], dtype=np.float32)
    np.testing.assert_allclose(table["prob_0"].to_numpy(), want[:, 0], rtol=1e-4, atol=1e-6)


def test_auto_picks_cuda_when_active(cuda_model_path):
    assert Model(str(cuda_model_path), device="auto").provider == "CUDAExecutionProvider"
