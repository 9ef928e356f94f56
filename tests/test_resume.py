"""mode=resume and the manifest: a crashed night is finished, not redone, and never mixed with another model."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, make_table, write_files

import batchscore
from batchscore.errors import OutputExistsError

KEEP = ("id", "segment")


def spec(tmp_path: Path, model: Path, *, out: str = "out", **changes: object) -> batchscore.JobSpec:
    base = batchscore.JobSpec(
        inputs=(str(tmp_path / "in"),), model=str(model), out=str(tmp_path / out), keep=KEEP, mode="resume"
    )
    return base.replace(**changes)


def manifest(out: Path) -> dict:
    return json.loads((out / "_batchscore.json").read_text())


def data_bytes(path: Path) -> bytes:
    """A part's data columns as Arrow IPC bytes: equal bytes, equal data, bit for bit (NaN payloads included)."""
    table = pq.read_table(path).replace_schema_metadata(None).combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


@pytest.mark.slow
def test_resume_after_kill_9_equals_an_uninterrupted_run(models, tmp_path, caplog):
    files = 16
    write_files(
        tmp_path / "in", [make_table(2000, seed=i, start_id=i * 2000) for i in range(files)], row_group_size=500
    )
    out = tmp_path / "out"
    command = [sys.executable, "-m", "batchscore", "score", tmp_path / "in", "--model", models["logreg"]]
    command += ["--out", out, "--keep", ",".join(KEEP), "--mode", "resume", "--batch-size", "8", "-q"]
    proc = subprocess.Popen(list(map(str, command)), env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if list(out.glob("_batchscore/*/part-*.json")):  # a part is written, synced and recorded
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    done = len(list(out.glob("_batchscore/*/part-*.json")))
    assert 1 <= done < files, "the run finished before it was killed: make it slower"
    # what kill -9 leaves: nothing a reader lists, only the work area and the lock
    assert not list(out.glob("**/*.parquet")) and not (out / "_SUCCESS").exists()
    assert not (out / "_batchscore.json").exists() and (out / "_batchscore.lock").exists()
    recorded = [json.loads(p.read_text())["files"][0] for p in out.glob("_batchscore/*/part-*.json")]
    staged = {name: next(out.glob(f"_batchscore/*/{name}.staged")).stat().st_mtime_ns for name in recorded}

    caplog.set_level(logging.INFO, logger="batchscore")
    report = batchscore.run(spec(tmp_path, models["logreg"], batch_size=8))
    assert report.parts_skipped >= done and report.rows_written == (files - report.parts_skipped) * 2000
    assert "took over the lock of a run that is gone" in caplog.text
    assert "adopting part" in caplog.text and "left by a run that did not finish" in caplog.text
    assert not (out / "_batchscore").exists() and not (out / "_batchscore.lock").exists()
    assert (out / "_SUCCESS").exists() and manifest(out)["complete"]
    for name, mtime in staged.items():
        assert (out / name).stat().st_mtime_ns == mtime  # adopted parts are moved into place, not rewritten
    assert len(manifest(out)["runs"]) == 2

    clean = batchscore.run(spec(tmp_path, models["logreg"], out="clean", mode="error", batch_size=8))
    assert [Path(p).name for p in report.parts] == [Path(p).name for p in clean.parts]
    assert len(report.parts) == files
    for resumed, fresh in zip(report.parts, clean.parts, strict=True):
        assert data_bytes(Path(resumed)) == data_bytes(Path(fresh))


def test_resume_of_a_complete_output_scores_nothing(models, dataset, tmp_path):
    dataset(files=2, rows=100)
    first = batchscore.run(spec(tmp_path, models["logreg"]))
    before = (tmp_path / "out" / "_batchscore.json").read_text()
    again = batchscore.run(spec(tmp_path, models["logreg"]))
    assert (first.rows_written, again.rows_written, again.parts_skipped) == (200, 0, 2)
    assert again.parts == first.parts
    assert (tmp_path / "out" / "_batchscore.json").read_text() == before


def test_resume_rescores_a_changed_input_and_drops_a_removed_one(models, dataset, tmp_path):
    files = dataset(files=3, rows=100)
    batchscore.run(spec(tmp_path, models["logreg"]))
    write_files(tmp_path / "in", [make_table(150, seed=99, start_id=1000)])  # part-0.parquet rewritten
    files[2].unlink()
    report = batchscore.run(spec(tmp_path, models["logreg"]))
    assert (report.rows_written, report.parts_skipped) == (150, 1)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("*.parquet")) == ["part-00000.parquet", "part-00001.parquet"]
    assert pq.read_table(out / "part-00000.parquet")["id"][0].as_py() == 1000
    assert [p["rows"] for p in manifest(out)["parts"]] == [150, 100]


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"model": "regressor"}, "a different model (sha256"),  # a new model: every score would differ
        ({"prob_format": "list"}, "different options (spec hash"),  # same model, other columns
        ({"filter": "segment = 'a'"}, "different options (spec hash"),  # same columns, other rows
    ],
)
def test_resume_refuses_a_different_model_or_spec(models, dataset, tmp_path, changes, needle):
    dataset(files=2, rows=50)
    batchscore.run(spec(tmp_path, models["logreg"]))
    if "model" in changes:
        changes = {**changes, "model": str(models[changes["model"]])}
    with pytest.raises(OutputExistsError, match=re.escape(needle)) as info:
        batchscore.run(spec(tmp_path, models["logreg"]).replace(**changes))
    assert "pass --mode overwrite" in str(info.value)
    assert (tmp_path / "out" / "_SUCCESS").exists()  # the refused run changed nothing
    batchscore.run(spec(tmp_path, models["logreg"]).replace(mode="overwrite", **changes))
    batchscore.run(spec(tmp_path, models["logreg"]).replace(**changes))  # and now it resumes


def test_resume_refuses_output_without_a_manifest(models, dataset, tmp_path):
    dataset(files=1, rows=50)
    batchscore.run(spec(tmp_path, models["logreg"], mode="error"))
    (tmp_path / "out" / "_batchscore.json").unlink()
    with pytest.raises(OutputExistsError, match=r"holds 1 Parquet file\(s\) that no batchscore manifest there lists"):
        batchscore.run(spec(tmp_path, models["logreg"]))


def test_manifest_says_what_made_the_output(models, dataset, tmp_path):
    files = dataset(files=2, rows=300)
    job = tmp_path / "job.toml"
    model = models["forest"]
    job.write_text(
        f'[model]\npath = "{model}"\n[input]\npaths = "in"\nkeep = ["id", "segment"]\n[output]\npath = "out"\n'
    )
    report = batchscore.run(batchscore.load_job(str(job)))
    got = manifest(tmp_path / "out")
    assert got["manifest_version"] == 2 and got["complete"] is True
    assert got["run_id"] == report.run_id and got["runs"] == [report.run_id]
    assert got["job_file"] == str(job)
    assert got["spec"]["keep"] == ["id", "segment"] and got["spec"]["mode"] == "error"
    assert got["model"] == str(models["forest"]) and got["model_sha256"] == report.model_sha256
    assert got["provider"] == "CPUExecutionProvider"
    assert got["onnxruntime_version"] == report.onnxruntime_version
    assert got["batchscore_version"] == batchscore.__version__
    assert [(i["path"], i["rows"]) for i in got["inputs"]] == [(str(f), 300) for f in files]
    assert [(p["index"], p["input"], p["rows"], p["files"]) for p in got["parts"]] == [
        (0, str(files[0]), 300, ["part-00000.parquet"]),
        (1, str(files[1]), 300, ["part-00001.parquet"]),
    ]
    assert got["rows_written"] == 600 and got["null_counts"] == {}
    assert got["seconds"] > 0 and got["started_at"] and got["finished_at"]
    assert len(got["spec_hash"]) == 16
    footer = batchscore.writer.read_metadata(str(tmp_path / "out" / "part-00000.parquet"))
    assert (footer["run_id"], footer["model_sha256"]) == (report.run_id, report.model_sha256)


def test_manifest_counts_nulls_per_part(models, tmp_path):
    table = make_table(100, seed=3)
    f0 = table["f0"].to_pylist()
    f0[:7] = [None] * 7
    table = table.set_column(table.schema.get_field_index("f0"), "f0", pa.array(f0))
    write_files(tmp_path / "in", [table, make_table(100, seed=4)])
    batchscore.run(spec(tmp_path, models["logreg"], on_null="fill"))
    got = manifest(tmp_path / "out")
    assert [p["null_counts"] for p in got["parts"]] == [{"f0": 7}, {}]
    assert got["null_counts"] == {"f0": 7}
