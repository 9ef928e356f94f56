"""Shared fixtures: small real Parquet files and real ONNX models (skl2onnx, onnx.helper)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

N_FEATURES = 6
FEATURES = [f"f{i}" for i in range(N_FEATURES)]
ROOT = Path(__file__).resolve().parent.parent


def make_table(rows: int, *, seed: int = 0, start_id: int = 0) -> pa.Table:
    """An id, a string segment, and N_FEATURES float64 features."""
    rng = np.random.default_rng(seed)
    cols: dict[str, pa.Array] = {
        "id": pa.array(np.arange(start_id, start_id + rows, dtype=np.int64)),
        "segment": pa.array(rng.choice(["a", "b", "c"], size=rows)),
    }
    for i, name in enumerate(FEATURES):
        cols[name] = pa.array(rng.normal(loc=i, scale=1 + i, size=rows))
    return pa.table(cols)


def write_files(folder: Path, tables: Sequence[pa.Table], *, row_group_size: int = 1000) -> list[Path]:
    """Write tables as part-N.parquet files in folder."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, table in enumerate(tables):
        path = folder / f"part-{i}.parquet"
        pq.write_table(table, path, row_group_size=row_group_size)
        paths.append(path)
    return paths


def training_data(rows: int = 400, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    table = make_table(rows, seed=seed)
    x = np.column_stack([table[c].to_numpy() for c in FEATURES]).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] - 0.2 * x[:, 3] > 1.0).astype(np.int64) + (x[:, 2] > 3).astype(np.int64)
    return x, y


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def direct_run(model_path: Path | str, x: np.ndarray) -> list[np.ndarray]:
    """What a plain onnxruntime session returns for x, ZipMap and all."""
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


def table_matrix(path: Path | str, dtype: type = np.float32) -> np.ndarray:
    table = pq.read_table(path)
    return np.column_stack([table[c].to_numpy() for c in FEATURES]).astype(dtype)


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real converted models, by name."""
    folder = tmp_path_factory.mktemp("models")
    x, y = training_data()
    logreg = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)
    forest = RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0).fit(x, y)
    names = np.array(["low", "mid", "high"])[y]
    strings = LogisticRegression(max_iter=500).fit(x, names)
    with warnings.catch_warnings():  # a few iterations are enough for a parity fixture
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = MLPClassifier(hidden_layer_sizes=(8,), max_iter=50, random_state=0).fit(x, names)
    regressor = LinearRegression().fit(x, x[:, 0] * 2 + 1)
    regressor64 = LinearRegression().fit(x.astype(np.float64), x[:, 0] * 2 + 1)
    out = {
        "logreg_zipmap": save(to_onnx(logreg, x[:1]), folder / "logreg_zipmap.onnx"),
        "logreg": save(to_onnx(logreg, x[:1], options={"zipmap": False}), folder / "logreg.onnx"),
        "forest": save(to_onnx(forest, x[:1]), folder / "forest.onnx"),
        "strings": save(to_onnx(strings, x[:1]), folder / "strings.onnx"),
        "mlp": save(to_onnx(mlp, x[:1], options={"zipmap": False}), folder / "mlp.onnx"),
        "regressor": save(to_onnx(regressor, x[:1]), folder / "regressor.onnx"),
        "regressor64": save(to_onnx(regressor64, x[:1].astype(np.float64)), folder / "regressor64.onnx"),
        "generic": save(generic_model(), folder / "generic.onnx"),
    }
    return out


def generic_model() -> onnx.ModelProto:
    """Two outputs: a [N] row sum and the [N, F] input doubled (a list column)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, N_FEATURES])
    total = helper.make_tensor_value_info("total", TensorProto.FLOAT, [None])
    doubled = helper.make_tensor_value_info("doubled", TensorProto.FLOAT, [None, N_FEATURES])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    nodes = [
        helper.make_node("ReduceSum", ["x", "axes"], ["total"], keepdims=0),
        helper.make_node("Mul", ["x", "two"], ["doubled"]),
    ]
    graph = helper.make_graph(nodes, "generic", [x], [total, doubled], initializer=[axes, two])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture
def dataset(tmp_path: Path) -> Callable[..., list[Path]]:
    """Write `files` Parquet files of `rows` rows each under tmp_path/in."""

    def make(files: int = 3, rows: int = 2500, folder: str = "in") -> list[Path]:
        tables = [make_table(rows, seed=10 + i, start_id=i * rows) for i in range(files)]
        return write_files(tmp_path / folder, tables)

    return make


@pytest.fixture(autouse=True)
def _no_pager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
