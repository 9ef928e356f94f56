"""Child-process side of the benchmark: one contender or stage per process.

Invoked by ``bench.py`` as ``python benchmarks/worker.py '<json spec>'``.  Each
kind imports only the libraries it needs (so that, e.g., the plain loop's
peak RSS does not include polars) and prints exactly one JSON line on stdout::

    {"kind": ..., "rows": N, "seconds": S, "maxrss_mb": M, ...}

``seconds`` is measured inside the child and covers only the work the kind is
meant to time (see each function's docstring); the parent separately records
the process wall time.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

BATCH_SIZE = 65536
COMPRESSION: Final = "zstd"


def maxrss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_session(model: str) -> Any:
    """Create a CPU onnxruntime session with default intra-op threads and no spinning."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])


def outputs_to_columns(names: Sequence[str], outputs: Sequence[Any]) -> dict[str, Any]:
    """Turn ``session.run`` outputs into flat named 1-D columns.

    A 2-D ``[n, k]`` tensor becomes ``name_0..name_{k-1}`` (or ``name`` when
    ``k == 1``).  A ZipMap output (list of ``{class: probability}`` dicts) is
    consumed the way a naive user would: one Python list comprehension per
    class.
    """
    import numpy as np

    cols: dict[str, Any] = {}
    for name, out in zip(names, outputs, strict=True):
        if isinstance(out, list):
            keys = list(out[0].keys()) if out else []
            for k in keys:
                cols[f"{name}_{k}"] = np.array([d[k] for d in out], dtype=np.float32)
            continue
        arr = np.asarray(out)
        if arr.ndim == 2 and arr.shape[1] == 1:
            cols[name] = arr[:, 0]
        elif arr.ndim == 2:
            for j in range(arr.shape[1]):
                cols[f"{name}_{j}"] = arr[:, j]
        else:
            cols[name] = arr
    return cols


def run_stage_read(spec: dict[str, Any]) -> dict[str, Any]:
    """Time ``ParquetFile.iter_batches`` over the needed columns of every file."""
    import pyarrow.parquet as pq

    columns = list(spec["columns"])
    rows = 0
    t0 = time.perf_counter()
    for f in spec["files"]:
        pf = pq.ParquetFile(f)
        for batch in pf.iter_batches(batch_size=BATCH_SIZE, columns=columns):
            rows += batch.num_rows
    return {"rows": rows, "seconds": time.perf_counter() - t0}


def run_stage_convert(spec: dict[str, Any]) -> dict[str, Any]:
    """Time float64 columns -> preallocated C-contiguous float32 matrix, column by column.

    Reading the batches is *not* timed; only the fill of the buffer is.
    """
    import numpy as np
    import pyarrow.parquet as pq

    features = list(spec["features"])
    buf = np.empty((BATCH_SIZE, len(features)), dtype=np.float32, order="C")
    rows = 0
    seconds = 0.0
    checksum = 0.0
    for f in spec["files"]:
        pf = pq.ParquetFile(f)
        for batch in pf.iter_batches(batch_size=BATCH_SIZE, columns=features):
            n = batch.num_rows
            t0 = time.perf_counter()
            out = buf[:n]
            for j in range(batch.num_columns):
                out[:, j] = batch.column(j).to_numpy(zero_copy_only=False)
            seconds += time.perf_counter() - t0
            checksum += float(out[0, 0]) if n else 0.0
            rows += n
    return {"rows": rows, "seconds": seconds, "checksum": checksum}


def run_stage_write(spec: dict[str, Any]) -> dict[str, Any]:
    """Time writing ``id`` + ``label`` + two float32 probability columns.

    One output file per input file (``spec['file_rows']``), ``ParquetWriter``
    with zstd, 65536-row tables; the data is built before the clock starts.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(7)
    p1 = rng.random(BATCH_SIZE, dtype=np.float32)
    template = pa.table(
        {
            "id": pa.array(np.arange(BATCH_SIZE, dtype=np.int64)),
            "label": pa.array((p1 > 0.5).astype(np.int64)),
            "probabilities_0": pa.array(1.0 - p1),
            "probabilities_1": pa.array(p1),
        }
    )
    out_dir = Path(spec["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = 0
    t0 = time.perf_counter()
    for i, n_rows in enumerate(spec["file_rows"]):
        with pq.ParquetWriter(out_dir / f"part-{i:03d}.parquet", template.schema, compression=COMPRESSION) as w:
            done = 0
            while done < n_rows:
                n = min(BATCH_SIZE, n_rows - done)
                w.write_table(template if n == BATCH_SIZE else template.slice(0, n))
                done += n
        rows += n_rows
    return {"rows": rows, "seconds": time.perf_counter() - t0}


def run_infer(spec: dict[str, Any]) -> dict[str, Any]:
    """Time ``session.run`` alone on pre-converted float32 input, 65536-row batches.

    Loading and converting the input and creating the session are not timed;
    one small warm-up run precedes the clock.
    """
    import numpy as np
    import pyarrow.parquet as pq

    features = list(spec["features"])
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in spec["files"])
    x = np.empty((total, len(features)), dtype=np.float32, order="C")
    pos = 0
    for f in spec["files"]:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=BATCH_SIZE, columns=features):
            n = batch.num_rows
            for j in range(batch.num_columns):
                x[pos : pos + n, j] = batch.column(j).to_numpy(zero_copy_only=False)
            pos += n
    sess = make_session(spec["model"])
    in_name = sess.get_inputs()[0].name
    sess.run(None, {in_name: x[: min(1024, total)]})
    t0 = time.perf_counter()
    for start in range(0, total, BATCH_SIZE):
        sess.run(None, {in_name: x[start : start + BATCH_SIZE]})
    return {"rows": total, "seconds": time.perf_counter() - t0}


def run_plain(spec: dict[str, Any]) -> dict[str, Any]:
    """The hand-written loop a user would write; everything after imports is timed.

    Per file: ``iter_batches`` -> ``np.column_stack(...).astype(float32)`` ->
    ``session.run`` -> ``pa.table`` (id + outputs) -> one ``ParquetWriter``.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    features = list(spec["features"])
    out_dir = Path(spec["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    sess = make_session(spec["model"])
    in_name = sess.get_inputs()[0].name
    out_names = [o.name for o in sess.get_outputs()]
    rows = 0
    for f in spec["files"]:
        pf = pq.ParquetFile(f)
        writer: pq.ParquetWriter | None = None
        try:
            for batch in pf.iter_batches(batch_size=BATCH_SIZE, columns=["id", *features]):
                x = np.column_stack([batch.column(c).to_numpy() for c in features]).astype(np.float32)
                outputs = sess.run(None, {in_name: x})
                cols = {"id": batch.column("id")}
                cols.update(outputs_to_columns(out_names, outputs))
                table = pa.table(cols)
                if writer is None:
                    writer = pq.ParquetWriter(out_dir / Path(f).name, table.schema, compression=COMPRESSION)
                writer.write_table(table)
                rows += batch.num_rows
        finally:
            if writer is not None:
                writer.close()
    return {"rows": rows, "seconds": time.perf_counter() - t0}


def run_polars_read_all(spec: dict[str, Any]) -> dict[str, Any]:
    """Polars reading every column of each whole file; everything after imports is timed.

    Per file: ``pl.scan_parquet(f).collect()`` -> float32 numpy ->
    ``session.run`` on the whole file -> ``DataFrame.write_parquet``.
    """
    import numpy as np
    import polars as pl

    t0 = time.perf_counter()
    features = list(spec["features"])
    out_dir = Path(spec["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    sess = make_session(spec["model"])
    in_name = sess.get_inputs()[0].name
    out_names = [o.name for o in sess.get_outputs()]
    rows = 0
    for f in spec["files"]:
        df = pl.scan_parquet(f).collect()
        x = df.select(features).to_numpy().astype(np.float32)
        outputs = sess.run(None, {in_name: x})
        cols: dict[str, Any] = {"id": df["id"]}
        cols.update(outputs_to_columns(out_names, outputs))
        pl.DataFrame(cols).write_parquet(out_dir / Path(f).name, compression=COMPRESSION)
        rows += df.height
        del df, x, outputs, cols
    return {"rows": rows, "seconds": time.perf_counter() - t0}


def run_polars_select(spec: dict[str, Any]) -> dict[str, Any]:
    """The loop a careful Polars user writes: only the needed columns; everything after imports is timed.

    Per file: ``pl.scan_parquet(f).select(id + features).collect()`` ->
    ``to_numpy().astype(float32)`` -> ``session.run`` -> ``DataFrame.write_parquet``.
    """
    import numpy as np
    import polars as pl

    t0 = time.perf_counter()
    features = list(spec["features"])
    out_dir = Path(spec["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    sess = make_session(spec["model"])
    in_name = sess.get_inputs()[0].name
    out_names = [o.name for o in sess.get_outputs()]
    rows = 0
    for f in spec["files"]:
        df = pl.scan_parquet(f).select(["id", *features]).collect()
        x = df.select(features).to_numpy().astype(np.float32)
        outputs = sess.run(None, {in_name: x})
        cols: dict[str, Any] = {"id": df["id"]}
        cols.update(outputs_to_columns(out_names, outputs))
        pl.DataFrame(cols).write_parquet(out_dir / Path(f).name, compression=COMPRESSION)
        rows += df.height
        del df, x, outputs, cols
    return {"rows": rows, "seconds": time.perf_counter() - t0}


def run_raydata(spec: dict[str, Any]) -> dict[str, Any]:
    """The Ray Data pipeline a user writes: ``read_parquet -> map_batches(actor class) -> write_parquet``.

    A local cluster is started (its start-up is timed: the user pays it too); ``spec['actors']``
    scoring actors of one CPU each, one onnxruntime thread each, Arrow batches of 65536 rows.
    """
    import logging

    import numpy as np
    import pyarrow as pa
    import ray

    t0 = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    features = list(spec["features"])
    model = spec["model"]

    class Scorer:
        def __init__(self) -> None:
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self.sess = ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])
            self.in_name = self.sess.get_inputs()[0].name
            self.out_names = [o.name for o in self.sess.get_outputs()]

        def __call__(self, batch: pa.Table) -> pa.Table:
            x = np.column_stack([batch[c].to_numpy() for c in features]).astype(np.float32)
            outputs = self.sess.run(None, {self.in_name: x})
            cols = {"id": batch["id"], **outputs_to_columns(self.out_names, outputs)}
            return pa.table(cols)

    ds = ray.data.read_parquet(list(spec["files"]), columns=["id", *features])
    ds = ds.map_batches(Scorer, batch_size=BATCH_SIZE, batch_format="pyarrow", concurrency=int(spec["actors"]))
    ds.write_parquet(spec["out_dir"], compression=COMPRESSION)
    seconds = time.perf_counter() - t0
    ray.shutdown()
    return {"rows": sum(pq_rows(f) for f in Path(spec["out_dir"]).rglob("*.parquet")), "seconds": seconds}


def run_stage_cpu(spec: dict[str, Any]) -> dict[str, Any]:
    """CPU time per row of each stage, on the same rows: what N cores can do, whatever else the machine runs.

    ``time.process_time`` (every thread of this process) around each stage: read (whole row
    groups, as batchscore reads them), assemble (float64 columns -> float32 matrix), infer
    (one onnxruntime thread, 16384-row calls) and write (id + outputs, zstd). CPU time, unlike
    wall time, hardly moves when other work shares the cores.
    """
    import numpy as np
    import onnxruntime as ort
    import pyarrow as pa
    import pyarrow.parquet as pq

    features = list(spec["features"])
    cpu: dict[str, float] = {}

    def timed(stage: str, start: float) -> None:
        cpu[stage] = cpu.get(stage, 0.0) + time.process_time() - start

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(spec["model"], sess_options=so, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    out_names = [o.name for o in sess.get_outputs()]
    rows = 0
    out_dir = Path(spec["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    buf = np.empty((BATCH_SIZE, len(features)), dtype=np.float32)
    for f in spec["files"]:
        start = time.process_time()
        pf = pq.ParquetFile(f)
        batches = [
            b
            for g in range(pf.metadata.num_row_groups)
            for b in pf.read_row_group(g, columns=["id", *features]).to_batches(max_chunksize=BATCH_SIZE)
        ]
        timed("read", start)
        tables = []
        for batch in batches:
            n = batch.num_rows
            start = time.process_time()
            x = buf[:n]
            for j, name in enumerate(features):
                x[:, j] = batch.column(name).to_numpy(zero_copy_only=False)
            timed("assemble", start)
            start = time.process_time()
            parts = [sess.run(None, {in_name: x[i : i + 16384]}) for i in range(0, n, 16384)]
            outputs = [np.concatenate([p[k] for p in parts]) for k in range(len(out_names))]
            timed("infer", start)
            start = time.process_time()
            tables.append(pa.table({"id": batch.column("id"), **outputs_to_columns(out_names, outputs)}))
            timed("write", start)
            rows += n
        start = time.process_time()
        with pq.ParquetWriter(out_dir / Path(f).name, tables[0].schema, compression=COMPRESSION) as w:
            for table in tables:
                w.write_table(table)
        timed("write", start)
    return {"rows": rows, "seconds": sum(cpu.values()), "cpu_us_per_row": {k: v / rows * 1e6 for k, v in cpu.items()}}


def pq_rows(path: Path) -> int:
    """Rows of one Parquet file, from its footer."""
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)


KINDS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "raydata": run_raydata,
    "stage_cpu": run_stage_cpu,
    "stage_read": run_stage_read,
    "stage_convert": run_stage_convert,
    "stage_write": run_stage_write,
    "infer": run_infer,
    "plain": run_plain,
    "polars_read_all": run_polars_read_all,
    "polars_select": run_polars_select,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the kind named in the JSON spec (first argument) and print one JSON result line."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: worker.py '<json spec>'", file=sys.stderr)
        return 2
    spec = json.loads(args[0])
    result = KINDS[spec["kind"]](spec)
    result["kind"] = spec["kind"]
    result["maxrss_mb"] = maxrss_mb()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
