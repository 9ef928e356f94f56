"""Shared fixtures: small real Parquet files and real ONNX models (skl2onnx, onnx.helper)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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

from batchscore import JobSpec

N_FEATURES = 6
FEATURES = [f"f{i}" for i in range(N_FEATURES)]
ROOT = Path(__file__).resolve().parent.parent


def cli(*args: object, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``batchscore ARGS...`` as a user runs it: a process of its own (this checkout's package), output captured."""
    return subprocess.run(
        [sys.executable, "-m", "batchscore", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The run's one ``batchscore: error:`` line, after checking the exit code and that no traceback was shown."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("batchscore: error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


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


# --- models with several typed inputs, vector inputs and fixed batches (issue 5) ---

CITIES = ["paris", "rome", "oslo"]


def mixed_table(rows: int, *, seed: int = 0, unknown: bool = True) -> pa.Table:
    """Columns for a ColumnTransformer: income (float64), age (int32), city (string), plus an id and a vector."""
    rng = np.random.default_rng(seed)
    cities = CITIES + (["berlin", "lima"] if unknown else [])  # categories the encoder never saw
    return pa.table(
        {
            "id": pa.array(np.arange(rows, dtype=np.int64)),
            "income": pa.array(rng.normal(50, 10, rows)),
            "age": pa.array(rng.integers(18, 80, rows), pa.int32()),
            "city": pa.array(rng.choice(cities, rows)),
            "emb": pa.array(list(rng.normal(size=(rows, 4)).astype(np.float32)), pa.list_(pa.float32())),
        }
    )


def mixed_feeds(table: pa.Table) -> dict[str, np.ndarray]:
    """What a hand-written onnxruntime script feeds the ColumnTransformer model."""
    return {
        "income": table["income"].to_numpy().astype(np.float32).reshape(-1, 1),
        "age": table["age"].to_numpy().astype(np.int64).reshape(-1, 1),
        "city": table["city"].to_numpy(zero_copy_only=False).astype(object).reshape(-1, 1),
    }


def run_feeds(model_path: Path | str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


@pytest.fixture(scope="session")
def mixed_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """skl2onnx ColumnTransformer: scaled float and int64 columns, a one-hot string column; ZipMap output."""
    import pandas as pd
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder

    train = mixed_table(300, seed=1, unknown=False).select(["income", "age", "city"]).to_pandas()
    y = (train["income"] + (train["city"] == "oslo") * 8 > 52).astype(np.int64)
    columns = ColumnTransformer(
        [("num", StandardScaler(), ["income", "age"]), ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"])]
    )
    pipe = make_pipeline(columns, LogisticRegression(max_iter=500)).fit(pd.DataFrame(train), y)
    types = [
        ("income", FloatTensorType([None, 1])),
        ("age", Int64TensorType([None, 1])),
        ("city", StringTensorType([None, 1])),
    ]
    return save(to_onnx(pipe, initial_types=types), tmp_path_factory.mktemp("mixed") / "mixed.onnx")


def _helper_model(
    name: str, inputs: list, outputs: list, nodes: list, initializer: list | None = None
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=initializer or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="session")
def helper_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """onnx.helper models: a fixed batch of 4, a vector input, and typed inputs echoed back."""
    folder = tmp_path_factory.mktemp("helper")
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    fixed = _helper_model(
        "fixed4",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, N_FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, N_FEATURES])],
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        [two],
    )
    vector = _helper_model(
        "vector",
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("norm", TensorProto.FLOAT, [None])],
        [helper.make_node("ReduceSumSquare", ["emb"], ["norm"], axes=[1], keepdims=0)],
    )
    typed_inputs = [
        ("i64", TensorProto.INT64, [None]),
        ("i32", TensorProto.INT32, [None, 1]),
        ("u8", TensorProto.UINT8, [None, 1]),
        ("flag", TensorProto.BOOL, [None, 1]),
        ("f64", TensorProto.DOUBLE, [None, 1]),
        ("name", TensorProto.STRING, [None, 1]),
    ]
    typed = _helper_model(
        "typed",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in typed_inputs],
        [helper.make_tensor_value_info(f"out_{n}", t, s) for n, t, s in typed_inputs],
        [helper.make_node("Identity", [n], [f"out_{n}"]) for n, _, _ in typed_inputs],
    )
    return {
        "fixed4": save(fixed, folder / "fixed4.onnx"),
        "vector": save(vector, folder / "vector.onnx"),
        "typed": save(typed, folder / "typed.onnx"),
    }


@pytest.fixture(scope="session")
def boosted_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """LightGBM and XGBoost classifiers (binary and 3-class) converted with onnxmltools."""
    lightgbm = pytest.importorskip("lightgbm")
    xgboost = pytest.importorskip("xgboost")
    onnxmltools = pytest.importorskip("onnxmltools")
    from onnxmltools.convert.common.data_types import FloatTensorType

    folder = tmp_path_factory.mktemp("boosted")
    x, y3 = training_data()
    y2 = (y3 > 0).astype(np.int64)
    types = [("input", FloatTensorType([None, N_FEATURES]))]
    out = {}
    for classes, y in (("binary", y2), ("multi", y3)):
        lgbm = lightgbm.LGBMClassifier(n_estimators=8, num_leaves=7, verbose=-1, random_state=0).fit(x, y)
        xgb = xgboost.XGBClassifier(n_estimators=8, max_depth=3, random_state=0).fit(x, y)
        out[f"lgbm_{classes}"] = save(
            onnxmltools.convert_lightgbm(lgbm, initial_types=types, target_opset=15), folder / f"lgbm_{classes}.onnx"
        )
        out[f"xgb_{classes}"] = save(
            onnxmltools.convert_xgboost(xgb, initial_types=types, target_opset=15), folder / f"xgb_{classes}.onnx"
        )
    return out


TORCH_MLP = ROOT / "tests" / "fixtures" / "torch_mlp.onnx"


def typed_table(rows: int, *, seed: int = 0) -> pa.Table:
    """One column per input of helper_models['typed'], in types that convert exactly."""
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "i64": pa.array(rng.integers(-1000, 1000, rows)),
            "i32": pa.array(rng.integers(-1000, 1000, rows), pa.int16()),
            "u8": pa.array(rng.integers(0, 256, rows)),
            "flag": pa.array(rng.random(rows) > 0.5),
            "f64": pa.array(rng.normal(size=rows).astype(np.float32)),
            "name": pa.array(rng.choice(["x", "y", "z"], rows)),
        }
    )


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """A throwaway copy of the repo's runnable parts (data, jobs, Makefile), sharing .venv.

    Commands from README.md and jobs/ run here, so they write to a fresh out/ and
    never depend on (or collide with) what an earlier run left in the checkout.
    """
    root = tmp_path / "repo"
    root.mkdir()
    for folder in ("data", "jobs"):
        shutil.copytree(ROOT / folder, root / folder, copy_function=shutil.copy2)
    for name in ("Makefile", "pyproject.toml", "constraints.txt", "README.md"):
        shutil.copy2(ROOT / name, root / name)
    if (ROOT / ".venv").exists():
        (root / ".venv").symlink_to(ROOT / ".venv")
    return root


# --- object stores: real servers on 127.0.0.1, one per test session (per xdist worker) (issue 13) ---


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server in a subprocess, with test credentials in the environment; skipped if it cannot start."""
    from servers import CREDENTIALS, free_port, moto_command, serve

    port = free_port()
    command = moto_command(port)
    if isinstance(command, str):
        pytest.skip(f"no S3 server: {command}")
    with pytest.MonkeyPatch.context() as env:
        for key, value in CREDENTIALS.items():
            env.setenv(key, value)
        env.delenv("AWS_ENDPOINT_URL", raising=False)
        env.delenv("AWS_PROFILE", raising=False)
        with serve("moto", command, port) as server:
            if isinstance(server, str):
                pytest.skip(f"no S3 server: {server}")
            yield server


@pytest.fixture
def s3(s3_server):
    """A fresh bucket on the S3 server."""
    from servers import Bucket, new_bucket

    return Bucket(s3_server, "s3", new_bucket(s3_server))


GCS_BUCKET = "batchscore-test"


@pytest.fixture(scope="session")
def gcs_server():
    """gcp-storage-emulator in a subprocess (in memory); skipped if it cannot start."""
    from servers import free_port, gcs_command, serve

    port = free_port()
    command = gcs_command(port, GCS_BUCKET)
    if isinstance(command, str):
        pytest.skip(f"no GCS emulator: {command}")
    with serve("gcs", command, port) as server:
        if isinstance(server, str):
            pytest.skip(f"no GCS emulator: {server}")
        yield server


@pytest.fixture
def gcs(gcs_server):
    """A fresh prefix in the GCS emulator's bucket."""
    import uuid

    from servers import Bucket

    return Bucket(gcs_server, "gs", f"{GCS_BUCKET}/t-{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=["s3", "gs"])
def remote(request):
    """A fresh place on each object store: an S3 bucket, then a GCS prefix."""
    return request.getfixturevalue("s3" if request.param == "s3" else "gcs")


# --- nightly Delta tables (issue 14) ---

DAYS = {"2026-11-20": 3000, "2026-11-21": 2500}


def day_files(tmp_path: Path, ds: str, *, files: int = 1, rows: int | None = None, seed: int = 0) -> Path:
    """``tmp_path/in/ds=<ds>/part-N.parquet``: a day's data, as it lands nightly."""
    rows = rows or DAYS.get(ds, 1000)
    start = sum(ord(c) for c in ds) * 10_000
    tables = [make_table(rows, seed=seed + i, start_id=start + i * rows) for i in range(files)]
    write_files(tmp_path / "in" / f"ds={ds}", tables)
    return tmp_path / "in" / f"ds={ds}"


def nightly(tmp_path: Path, ds: str, model: Path, **options: object) -> JobSpec:
    """One night scored into the Delta table ``tmp_path/table``, partitioned by ds."""
    base = JobSpec(
        inputs=(str(tmp_path / "in" / f"ds={ds}"),),
        model=str(model),
        out=str(tmp_path / "table"),
        keep=("id", "segment", "ds"),
        partition_by=("ds",),
        format="delta",
    )
    return base.replace(**options)


# --- a model that imputes missing values itself (issue 9) ---


def imputing_table(rows: int, *, seed: int = 0, nulls: bool = True) -> pa.Table:
    """a, b: floats with nulls (imputed by the model); c: a float without imputation; n: an int64 count."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(5, 2, rows), rng.normal(0, 1, rows)
    mask_a, mask_b = (rng.random(rows) < 0.2) & nulls, (rng.random(rows) < 0.2) & nulls
    return pa.table(
        {
            "id": pa.array(np.arange(rows, dtype=np.int64)),
            "a": pa.array(a, mask=mask_a),
            "b": pa.array(b, mask=mask_b),
            "c": pa.array(rng.normal(size=rows)),
            "n": pa.array(rng.integers(0, 5, rows)),
        }
    )


@pytest.fixture(scope="session")
def imputing_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """skl2onnx ColumnTransformer: SimpleImputer + StandardScaler on a and b (trained on NaN), c scaled, n as is."""
    import pandas as pd
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer

    train = imputing_table(400, seed=1).to_pandas()  # nulls become NaN, as scikit-learn is trained on them
    y = ((train["a"].fillna(9) + train["c"]) > 5).astype(np.int64)
    columns = ColumnTransformer(
        [
            ("imputed", make_pipeline(SimpleImputer(), StandardScaler()), ["a", "b"]),
            ("scaled", StandardScaler(), ["c"]),
            ("count", "passthrough", ["n"]),
        ]
    )
    pipe = make_pipeline(columns, LogisticRegression(max_iter=500)).fit(pd.DataFrame(train[["a", "b", "c", "n"]]), y)
    types = [
        ("a", FloatTensorType([None, 1])),
        ("b", FloatTensorType([None, 1])),
        ("c", FloatTensorType([None, 1])),
        ("n", Int64TensorType([None, 1])),
    ]
    onx = to_onnx(pipe, initial_types=types, options={id(pipe): {"zipmap": False}})
    return save(onx, tmp_path_factory.mktemp("imputing") / "imputing.onnx")


def imputing_feeds(table: pa.Table, fill: float) -> dict[str, np.ndarray]:
    """What a hand-written onnxruntime script feeds the imputing model, nulls as ``fill``."""
    feeds = {}
    for name in ("a", "b", "c"):
        feeds[name] = table[name].fill_null(fill).to_numpy().astype(np.float32).reshape(-1, 1)
    feeds["n"] = table["n"].to_numpy().astype(np.int64).reshape(-1, 1)
    return feeds


# --- engines (issue 10): one output, whoever scored it ---


def data_bytes(path: Path) -> bytes:
    """A part's data columns as Arrow IPC bytes: equal bytes, equal data, bit for bit (NaN payloads included)."""
    table = pq.read_table(path).replace_schema_metadata(None).combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def output_parts(out: Path) -> dict[str, bytes]:
    """Every committed part below ``out`` (hive folders too), by relative path, as its data bytes."""
    return {
        str(p.relative_to(out)): data_bytes(p)
        for p in sorted(out.rglob("*.parquet"))
        if not any(part.startswith(("_", ".")) for part in p.relative_to(out).parts)
    }


def manifest_parts(out: Path) -> list[dict]:
    """The manifest's parts without what differs from run to run (run id, commit time)."""
    import json

    data = json.loads((out / "_batchscore.json").read_text())
    assert data["complete"] is True
    return [{k: v for k, v in p.items() if k not in ("run_id", "committed_at")} for p in data["parts"]]


def assert_same_output(out: Path, reference: Path) -> None:
    """The same part files with the same data, the same manifest parts and spec hash, and _SUCCESS."""
    import json

    assert (out / "_SUCCESS").exists()
    got, want = output_parts(out), output_parts(reference)
    assert list(got) == list(want)
    for name in want:
        assert got[name] == want[name], name
    assert manifest_parts(out) == manifest_parts(reference)
    hashes = [json.loads((o / "_batchscore.json").read_text())["spec_hash"] for o in (out, reference)]
    assert hashes[0] == hashes[1]


def hive_dataset(folder: Path, *, rows: int = 700) -> Path:
    """Hive folders ds=.../region=... with a file each."""
    for i, (ds, region) in enumerate([("2026-11-20", "eu"), ("2026-11-20", "us"), ("2026-11-21", "eu")]):
        table = make_table(rows, seed=40 + i, start_id=i * rows)
        write_files(folder / f"ds={ds}" / f"region={region}", [table], row_group_size=300)
    return folder


def bad_age_files(folder: Path, *, files: int = 4, rows: int = 300, bad: int = 3) -> Path:
    """Inputs for the mixed model where file ``bad`` (part-3) gives fractional ages: a value error found while
    scoring, not in the footers."""
    tables = []
    for i in range(files):
        table = mixed_table(rows, seed=60 + i)
        if i == bad:
            ages = table["age"].to_numpy().astype(np.float64) + 0.5
            table = table.set_column(table.schema.get_field_index("age"), "age", pa.array(ages))
        tables.append(table)
    write_files(folder, tables, row_group_size=100)
    return folder
