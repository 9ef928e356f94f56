"""Synthetic data and ONNX model generation for the batchscore benchmark.

Everything here is deterministic for a given seed and is written under a
cache directory (never inside the tracked tree).  A small ``manifest.json``
records the parameters so that ``--keep-data`` can reuse a previous run's
files when the parameters match.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

#: Bump when the data layout or the model recipes change, so that cached
#: artefacts from an older harness are never reused.
SCHEMA_VERSION = 4

N_FEATURES = 32
FEATURES: tuple[str, ...] = tuple(f"f{i:02d}" for i in range(N_FEATURES))
SEGMENTS: tuple[str, ...] = ("north", "south", "east", "west", "online", "retail", "b2b", "other")
ROW_GROUP_SIZE = 128 * 1024
TRAIN_ROWS = 20_000

MODEL_NAMES: tuple[str, ...] = ("logreg", "logreg_zipmap", "gbt", "mlp", "regressor")


@dataclass(frozen=True)
class DataParams:
    """Parameters that fully determine the generated Parquet data set."""

    rows: int
    n_files: int
    row_group_size: int = ROW_GROUP_SIZE
    seed: int = 20240601
    train_rows: int = TRAIN_ROWS
    schema_version: int = SCHEMA_VERSION

    @property
    def tag(self) -> str:
        """Directory name that identifies this parameter set."""
        return (
            f"rows{self.rows}_files{self.n_files}_rg{self.row_group_size}_s{self.seed}"
            f"_t{self.train_rows}_v{self.schema_version}"
        )


@dataclass
class Dataset:
    """Generated data files plus the trained ONNX models."""

    params: DataParams
    root: Path
    files: list[Path]
    file_rows: list[int]
    models: dict[str, Path]
    generate_seconds: float
    train_seconds: float
    reused: bool


def _true_weights(rng: np.random.Generator) -> np.ndarray:
    """Return fixed 'ground truth' coefficients of the synthetic target."""
    w: np.ndarray = rng.normal(0.0, 1.0, size=N_FEATURES) / np.sqrt(N_FEATURES / 4)
    return w


def _make_chunk(rng: np.random.Generator, start_id: int, n: int) -> pa.Table:
    """Build one chunk of ``n`` rows: ``id``, ``segment``, ``f00``..``f31``."""
    x = rng.standard_normal(size=(n, N_FEATURES))
    # A little structure so that the models are not fitting pure noise and
    # tree paths are not degenerate: a few correlated and skewed columns.
    x[:, 1] = 0.6 * x[:, 0] + 0.8 * x[:, 1]
    x[:, 2] = np.exp(0.5 * x[:, 2])
    x[:, 3] = np.round(x[:, 3] * 3.0)
    ids = np.arange(start_id, start_id + n, dtype=np.int64)
    seg_codes = rng.integers(0, len(SEGMENTS), size=n, dtype=np.int32)
    segment = pa.DictionaryArray.from_arrays(pa.array(seg_codes), pa.array(SEGMENTS)).cast(pa.string())
    arrays: list[pa.Array] = [pa.array(ids), segment]
    arrays.extend(pa.array(np.ascontiguousarray(x[:, j])) for j in range(N_FEATURES))
    return pa.Table.from_arrays(arrays, names=["id", "segment", *FEATURES])


def _write_files(params: DataParams, data_dir: Path) -> tuple[list[Path], list[int]]:
    """Write ``params.n_files`` zstd Parquet files, generating chunk by chunk."""
    data_dir.mkdir(parents=True, exist_ok=True)
    base, extra = divmod(params.rows, params.n_files)
    sizes = [base + (1 if i < extra else 0) for i in range(params.n_files)]
    files: list[Path] = []
    start = 0
    chunk = params.row_group_size * 2
    for i, size in enumerate(sizes):
        rng = np.random.default_rng([params.seed, i])
        path = data_dir / f"part-{i:03d}.parquet"
        tmp = path.with_suffix(".parquet.tmp")
        first = _make_chunk(rng, start, min(size, chunk)) if size else _make_chunk(rng, start, 0)
        with pq.ParquetWriter(tmp, first.schema, compression="zstd") as writer:
            writer.write_table(first, row_group_size=params.row_group_size)
            done = first.num_rows
            while done < size:
                n = min(chunk, size - done)
                writer.write_table(_make_chunk(rng, start + done, n), row_group_size=params.row_group_size)
                done += n
        tmp.replace(path)
        files.append(path)
        start += size
    return files, sizes


def synthetic_target(x: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(binary_label, continuous_target)`` for feature matrix ``x``."""
    rng = np.random.default_rng([seed, 999])
    w = _true_weights(rng)
    z = x @ w + 0.8 * np.sin(2.0 * x[:, 4]) * x[:, 5] - 0.5 * (x[:, 6] > 0.7)
    p = 1.0 / (1.0 + np.exp(-z))
    y_cls = (rng.random(len(p)) < p).astype(np.int64)
    y_reg = z + 0.3 * rng.standard_normal(len(z))
    return y_cls, y_reg


def _load_training_sample(files: Sequence[Path], n: int) -> np.ndarray:
    """Read the first ``n`` rows of features (float32) for training."""
    parts: list[np.ndarray] = []
    have = 0
    for f in files:
        pf = pq.ParquetFile(f)
        for batch in pf.iter_batches(batch_size=65536, columns=list(FEATURES)):
            arr = np.column_stack([batch.column(j).to_numpy() for j in range(batch.num_columns)])
            parts.append(arr)
            have += len(arr)
            if have >= n:
                break
        if have >= n:
            break
    return np.concatenate(parts)[:n].astype(np.float32)


def _to_onnx(model: Any, zipmap: bool | None, width: int = N_FEATURES) -> bytes:
    """Convert a fitted scikit-learn estimator to ONNX with float32 [None, 32] input.

    ``zipmap``: for classifiers, whether to keep skl2onnx's default ZipMap
    output (list of dicts) instead of a plain probability tensor; ``None``
    for regressors (no option passed).
    """
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    options: dict[int, dict[str, Any]] | None = {id(model): {"zipmap": False}} if zipmap is False else None
    onx = convert_sklearn(
        model,
        initial_types=[("input", FloatTensorType([None, width]))],
        options=options,
    )
    return bytes(onx.SerializeToString())


def _train_models(
    files: Sequence[Path], out_dir: Path, seed: int, names: Sequence[str], train_rows: int = TRAIN_ROWS
) -> dict[str, Path]:
    """Train the requested benchmark models on the first ``train_rows`` rows and save them as ONNX."""
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestRegressor
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    out_dir.mkdir(parents=True, exist_ok=True)
    x = _load_training_sample(files, train_rows)
    y_cls, y_reg = synthetic_target(x.astype(np.float64), seed)

    paths: dict[str, Path] = {}
    logreg: LogisticRegression | None = None

    def fit_logreg() -> LogisticRegression:
        nonlocal logreg
        if logreg is None:
            logreg = LogisticRegression(max_iter=500).fit(x, y_cls)
        return logreg

    def gbt() -> bytes:
        m = GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=seed).fit(x, y_cls)
        return _to_onnx(m, zipmap=False)

    def mlp() -> bytes:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            m = MLPClassifier(hidden_layer_sizes=(256, 256), max_iter=5, random_state=seed).fit(x, y_cls)
        return _to_onnx(m, zipmap=False)

    def regressor() -> bytes:
        # Sized so that ONNX Runtime inference alone runs at roughly
        # 0.5M rows/s on a 2-core machine (tree-ensemble bound, not I/O bound).
        m = RandomForestRegressor(n_estimators=60, max_depth=10, random_state=seed, n_jobs=1).fit(x, y_reg)
        return _to_onnx(m, zipmap=None)

    recipes: dict[str, Callable[[], bytes]] = {
        "logreg": lambda: _to_onnx(fit_logreg(), zipmap=False),
        "logreg_zipmap": lambda: _to_onnx(fit_logreg(), zipmap=True),
        "gbt": gbt,
        "mlp": mlp,
        "regressor": regressor,
    }
    for name in names:
        path = out_dir / f"{name}.onnx"
        path.write_bytes(recipes[name]())
        paths[name] = path
    return paths


def prepare(
    params: DataParams, cache_dir: Path, models: Sequence[str], keep: bool, log: Callable[[str], None] = print
) -> Dataset:
    """Generate (or reuse, when ``keep``) the data files and the ONNX models.

    The data lives in ``cache_dir / params.tag``; a ``manifest.json`` there is
    written last, so a half-written directory is never reused.
    """
    root = cache_dir / params.tag
    data_dir = root / "data"
    model_dir = root / "models"
    manifest_path = root / "manifest.json"
    unknown = [m for m in models if m not in MODEL_NAMES]
    if unknown:
        raise ValueError(f"unknown model(s): {', '.join(unknown)}; choose from {', '.join(MODEL_NAMES)}")

    manifest: dict[str, Any] | None = None
    if keep and manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            manifest = None
        if manifest is not None and (
            manifest.get("params") != asdict(params)
            or not all((data_dir / f).exists() for f in manifest.get("files", []))
        ):
            manifest = None

    if manifest is not None:
        files = [data_dir / f for f in manifest["files"]]
        sizes = [int(n) for n in manifest["file_rows"]]
        gen_s = 0.0
        reused = True
        log(f"reusing cached data in {root}")
    else:
        log(f"generating {params.rows:,} rows in {params.n_files} files under {root} ...")
        if manifest_path.exists():
            manifest_path.unlink()
        t0 = time.perf_counter()
        files, sizes = _write_files(params, data_dir)
        gen_s = time.perf_counter() - t0
        reused = False
        manifest = {"params": asdict(params), "files": [f.name for f in files], "file_rows": sizes, "models": []}
        manifest_path.write_text(json.dumps(manifest, indent=2))
        log(f"  data written in {gen_s:.1f} s")

    have_models = set(manifest.get("models", [])) if reused else set()
    need = [m for m in models if m not in have_models or not (model_dir / f"{m}.onnx").exists()]
    t0 = time.perf_counter()
    if need:
        log(f"training models: {', '.join(need)} ...")
        _train_models(files, model_dir, params.seed, need, params.train_rows)
    train_s = time.perf_counter() - t0
    if need:
        log(f"  models trained in {train_s:.1f} s")
    manifest["models"] = sorted(have_models | set(models))
    manifest_path.write_text(json.dumps(manifest, indent=2))

    return Dataset(
        params=params,
        root=root,
        files=files,
        file_rows=sizes,
        models={m: model_dir / f"{m}.onnx" for m in models},
        generate_seconds=gen_s,
        train_seconds=train_s,
        reused=reused,
    )


#: The narrow table of the one-row-group benchmark: an id and four features, so that a 15M-row group can be
#: generated in one piece (pyarrow writes a row group from one table in memory) in about 1 GB.
NARROW_FEATURES: tuple[str, ...] = FEATURES[:4]


@dataclass
class RowGroupPair:
    """The same rows twice: in one row group, and in ``ROW_GROUP_SIZE`` groups; a logreg on their features."""

    rows: int
    one_group: Path
    many_groups: Path
    model: Path
    reused: bool


def prepare_row_groups(
    rows: int, cache_dir: Path, *, seed: int, keep: bool, log: Callable[[str], None] = print
) -> RowGroupPair:
    """Write (or reuse, when ``keep``) ``rows`` rows as one row group and as many, plus a model of 4 features."""
    root = cache_dir / f"rowgroup_rows{rows}_s{seed}_v{SCHEMA_VERSION}"
    pair = RowGroupPair(rows, root / "one.parquet", root / "many.parquet", root / "logreg4.onnx", reused=False)
    done = root / "done"
    if keep and done.exists():
        log(f"reusing cached one-row-group data in {root}")
        pair.reused = True
        return pair
    log(f"generating {rows:,} rows as one row group and as {ROW_GROUP_SIZE:,}-row groups under {root} ...")
    root.mkdir(parents=True, exist_ok=True)
    done.unlink(missing_ok=True)
    rng = np.random.default_rng([seed, 7])
    x = rng.standard_normal(size=(rows, len(NARROW_FEATURES)))
    table = pa.Table.from_arrays(
        [pa.array(np.arange(rows, dtype=np.int64)), *(pa.array(np.ascontiguousarray(c)) for c in x.T)],
        names=["id", *NARROW_FEATURES],
    )
    pq.write_table(table, pair.one_group, row_group_size=rows, compression="zstd")
    pq.write_table(table, pair.many_groups, row_group_size=ROW_GROUP_SIZE, compression="zstd")
    from sklearn.linear_model import LogisticRegression

    sample = x[:5000].astype(np.float32)
    label = (sample[:, 0] + 0.5 * sample[:, 1] - sample[:, 3] > 0).astype(np.int64)
    fitted = LogisticRegression(max_iter=200).fit(sample, label)
    pair.model.write_bytes(_to_onnx(fitted, zipmap=False, width=len(NARROW_FEATURES)))
    done.write_text("ok\n")
    return pair
