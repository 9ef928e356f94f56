"""gs:// end to end on a GCS emulator (127.0.0.1): inputs and model read from the store, scores equal a direct
onnxruntime run. The output stays local here: the emulator ignores ifGenerationMatch, so the output lock (a
conditional write) is tested on S3 (tests/test_s3.py, tests/test_objectstore.py)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import FEATURES, direct_run, make_table, write_files

import batchscore


def test_score_inputs_and_model_from_gcs(gcs, models, tmp_path):
    for day in (19, 20):
        write_files(tmp_path / "lake" / f"ds=2026-11-{day}", [make_table(200, seed=day, start_id=day * 1000)])
    gcs.upload(tmp_path / "lake", "lake")
    gcs.put("models/logreg.onnx", Path(models["logreg"]).read_bytes())
    spec = batchscore.JobSpec(
        inputs=(gcs.uri("lake/ds=2026-11-*/*.parquet"),),
        model=gcs.uri("models/logreg.onnx"),
        out=str(tmp_path / "out"),
        keep=("id", "ds"),
        storage_options=gcs.server.options(),
    )
    report = batchscore.run(spec)
    assert report.rows_written == 400
    scores = pq.read_table(tmp_path / "out")
    local = pq.read_table(tmp_path / "lake")
    x = np.column_stack([local[c].to_numpy() for c in FEATURES]).astype(np.float32)
    labels, _ = direct_run(models["logreg"], x)
    assert scores["id"].to_pylist() == local["id"].to_pylist()
    days = [date(2026, 11, 19)] * 200 + [date(2026, 11, 20)] * 200  # hive folders became a date column
    assert scores["ds"].to_pylist() == days
    assert scores["prediction"].to_pylist() == labels.tolist()


def test_model_pin_is_checked_before_a_row_is_read(gcs, models, tmp_path):
    write_files(tmp_path / "in", [make_table(10)])
    gcs.put("models/logreg.onnx", Path(models["logreg"]).read_bytes())
    spec = batchscore.JobSpec(
        inputs=(str(tmp_path / "in"),),
        model=gcs.uri("models/logreg.onnx"),
        out=str(tmp_path / "out"),
        keep=("id", "segment"),
        model_sha256="0" * 64,
        storage_options=gcs.server.options(),
    )
    with pytest.raises(batchscore.ModelError, match=r"has sha256 [0-9a-f]{64}, but the job pins 0{64}"):
        batchscore.run(spec)
    assert not (tmp_path / "out").exists()
