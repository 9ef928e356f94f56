"""The summary stage of a run: every part summarized once, a resumed run reusing the parts it keeps."""

from __future__ import annotations

import json
import logging
import os

import pyarrow.parquet as pq
from conftest import make_table

import batchscore
from batchscore.summary import SUMMARY_PARTS, Summary, load


def spec(tmp_path, model, **changes):
    return batchscore.JobSpec(
        inputs=(str(tmp_path / "in"),), model=str(model), out=str(tmp_path / "out"), keep=("id", "segment"), **changes
    )


def test_every_part_is_summarized_and_the_manifest_names_the_summary(models, dataset, tmp_path):
    files = dataset(files=3, rows=700)
    report = batchscore.run(spec(tmp_path, models["logreg"], batch_size=300))
    saved = load(str(tmp_path / "out"))
    assert saved.summary.rows == report.rows_written == 2100
    assert saved.coverage == {"parts": 3, "parts_total": 3, "missing_parts": [], "rows": 2100}
    assert saved.lineage["run_id"] == report.run_id and saved.lineage["model_sha256"] == report.model_sha256
    assert set(saved.summary.features) == {f"f{i}" for i in range(6)}
    assert list(saved.summary.outputs) == ["prediction", "prob_0", "prob_1", "prob_2"]
    assert sum(saved.summary.outputs["prediction"].counts.values()) == 2100
    assert report.summary is not None and report.summary["rows"] == 2100
    parts = json.loads((tmp_path / "out" / SUMMARY_PARTS).read_text())["parts"]
    assert [p["input"] for p in parts] == [str(f) for f in files]
    assert [Summary.from_dict(p["summary"]).rows for p in parts] == [700, 700, 700]


def test_a_resumed_run_merges_the_parts_it_keeps_with_those_it_scores(models, dataset, tmp_path):
    files = dataset(files=3, rows=500)
    batchscore.run(spec(tmp_path, models["logreg"], mode="resume"))
    first = load(str(tmp_path / "out")).summary
    table = pq.read_table(files[1])  # the middle input is replaced: only its part is rescored
    pq.write_table(table.slice(0, 200), files[1])
    report = batchscore.run(spec(tmp_path, models["logreg"], mode="resume"))
    assert report.parts_skipped == 2
    saved = load(str(tmp_path / "out"))
    assert saved.summary.rows == 1200 and saved.coverage["missing_parts"] == []
    assert saved.summary.features["f0"].rows == 1200
    assert first.features["f0"].rows == 1500


def test_parts_committed_without_a_summary_are_named(models, dataset, tmp_path, caplog):
    files = dataset(files=3, rows=500)
    batchscore.run(spec(tmp_path, models["logreg"], mode="resume"))
    os.remove(tmp_path / "out" / SUMMARY_PARTS)  # as if the run that committed them had stopped before its end
    pq.write_table(make_table(500, seed=77, start_id=1000), files[2])  # the last input changed: rescored
    caplog.set_level(logging.WARNING, logger="batchscore")
    batchscore.run(spec(tmp_path, models["logreg"], mode="resume"))
    saved = load(str(tmp_path / "out"))
    assert saved.coverage == {"parts": 1, "parts_total": 3, "missing_parts": [0, 1], "rows": 500}
    assert "the summary covers 1 of 3 part(s)" in caplog.text
