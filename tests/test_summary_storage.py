"""Summaries on object stores: a drift reference, ``batchscore report`` and a resumed run's kept parts read
through the storage seam with the run's storage options, as on local disk (moto's S3 and a GCS emulator)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import cli, make_table, one_line_error, write_files

import batchscore
from batchscore import drift, pipeline
from batchscore.summary import SUMMARY, SUMMARY_PARTS, Summary, load

KEEP = ("id", "segment")


def night(folder: Path, day: int, *, files: int = 2, rows: int = 300) -> Path:
    """A night's inputs: ``files`` small Parquet files."""
    tables = [make_table(rows, seed=day * 10 + i, start_id=day * 1000 + i * rows) for i in range(files)]
    write_files(folder / f"ds={day}", tables)
    return folder / f"ds={day}"


@pytest.fixture
def lake(s3, tmp_path, models):
    """Two nights of inputs and the model in a fresh bucket."""
    for day in (19, 20):
        night(tmp_path / "events", day)
    s3.upload(tmp_path / "events", "events")
    s3.put("models/logreg.onnx", Path(models["logreg"]).read_bytes())
    return s3


def spec(bucket, day: int, **changes: object) -> batchscore.JobSpec:
    """Night ``day`` scored from the bucket into ``out/ds=<day>`` there."""
    base = batchscore.JobSpec(
        inputs=(bucket.uri(f"events/ds={day}"),),
        model=bucket.uri("models/logreg.onnx"),
        out=bucket.uri(f"out/ds={day}"),
        keep=KEEP,
        storage_options=bucket.server.options(),
    )
    return base.replace(**changes)


def test_the_second_night_on_s3_is_checked_against_the_first(lake):
    batchscore.run(spec(lake, 19))
    first = lake.uri("out/ds=19")
    assert pipeline.dry_run(spec(lake, 20, reference=first))["drift"].startswith(f"against {first} (found)")
    result = cli(
        "score", lake.uri("events/ds=20"), "--model", lake.uri("models/logreg.onnx"), "--out", lake.uri("out/ds=20"),
        "--keep", ",".join(KEEP), "--reference", first, "--report", lake.uri("reports/20.json"),
        *lake.server.cli_options(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "drift against" in result.stderr and "first run?" not in result.stderr
    checked = json.loads(lake.get("reports/20.json"))["drift"]
    assert checked is not None and checked["reference"] == first
    assert {c["column"] for c in checked["columns"] if c["role"] == "feature"} == {f"f{i}" for i in range(6)}
    saved = json.loads(lake.get(f"out/ds=20/{SUMMARY}"))
    assert saved["drift"] == checked and saved["lineage"]["output"] == lake.uri("out/ds=20")


def test_a_saved_summary_on_s3_serves_as_reference(lake):
    batchscore.run(spec(lake, 19))
    lake.put("saved/last_good.json", lake.get(f"out/ds=19/{SUMMARY}"))
    report = batchscore.run(spec(lake, 20, reference=lake.uri("saved/last_good.json")))
    assert report.drift is not None and report.drift["reference"] == lake.uri("saved/last_good.json")
    assert len(report.drift["columns"]) > 6


def test_a_missing_reference_on_s3_is_a_warning_on_the_first_night(lake, caplog):
    caplog.set_level(logging.WARNING, logger="batchscore")
    nothing = lake.uri("out/ds=18")
    plan = pipeline.dry_run(spec(lake, 19, reference=nothing))
    assert plan["drift"].startswith(f"against {nothing} (missing: a warning")
    report = batchscore.run(spec(lake, 19, reference=nothing, on_drift="fail"))
    assert report.drift is None and report.rows_written == 600
    assert f"reference {nothing} does not exist (the first run?)" in caplog.text
    assert json.loads(lake.get(f"out/ds=19/{SUMMARY}"))["drift"] is None
    # A folder that is there without a summary (scored with --no-summary, or by another tool): a warning too.
    lake.put("elsewhere/part-0.parquet", lake.get("events/ds=19/part-0.parquet"))
    batchscore.run(spec(lake, 20, reference=lake.uri("elsewhere")))
    assert f"reference {lake.uri('elsewhere')} holds no summary (the first run?)" in caplog.text


def test_a_reference_on_s3_that_is_not_a_summary_fails_before_scoring(lake):
    lake.put("saved/bad.json", b'{"rows": 3}')
    with pytest.raises(batchscore.InputDataError, match=r"s3://.*/saved/bad\.json is not a batchscore summary"):
        batchscore.run(spec(lake, 19, reference=lake.uri("saved/bad.json")))
    assert lake.keys("out") == []


def test_report_reads_an_output_and_its_reference_on_s3(lake, tmp_path):
    batchscore.run(spec(lake, 19))
    batchscore.run(spec(lake, 20, reference=lake.uri("out/ds=19")))
    options = lake.server.cli_options()
    page = lake.uri("reports/20.html")
    shown = cli("report", lake.uri("out/ds=20"), "--html", page, *options)  # the run's own reference, on S3 too
    assert shown.returncode == 0, shown.stderr
    assert f"wrote {page}" in shown.stderr and lake.get("reports/20.html").startswith(b"<!doctype html>")
    assert shown.stdout.startswith(f"summary of {lake.uri('out/ds=20', SUMMARY)}")
    assert f"against {lake.uri('out/ds=19')}" in shown.stdout and "is gone" not in shown.stdout
    assert "features:" in shown.stdout and "outputs:" in shown.stdout
    itself = cli("report", lake.uri("out/ds=20"), "--reference", lake.uri("out/ds=20"), "--json", *options)
    assert itself.returncode == 0, itself.stderr
    data = json.loads(itself.stdout)
    assert data["summary"]["rows"] == 600 and data["drift"]["flagged"] == []
    assert data["lineage"]["output"] == lake.uri("out/ds=20")


def test_report_errors_on_a_store_are_one_line(lake):
    batchscore.run(spec(lake, 19))
    missing = one_line_error(cli("report", lake.uri("out/ds=18"), *lake.server.cli_options()), 3)
    assert f"{lake.uri('out/ds=18')} does not exist; point at a batchscore output folder" in missing
    unknown = one_line_error(cli("report", lake.uri("out/ds=19"), "--storage-option", "endpoint=x"), 2)
    assert "unknown storage option 'endpoint' (did you mean 'endpoint_override'?)" in unknown
    unreachable = ["--storage-option", "endpoint_override=127.0.0.1:9", "--storage-option", "scheme=http"]
    unreachable += ["--storage-option", "retry_strategy=standard:1"]
    line = one_line_error(cli("report", lake.uri("out/ds=19"), *unreachable), 3)
    assert f"cannot look for a summary at {lake.uri('out/ds=19')}: cannot reach the storage endpoint" in line


def test_a_resume_on_s3_keeps_the_earlier_parts_summaries(lake, tmp_path, caplog):
    """Before, the parts file was looked for on local disk: the kept parts went unsummarized, with a warning."""
    lake.put("events/ds=19/part-2.parquet", lake.get("events/ds=19/part-0.parquet"))
    batchscore.run(spec(lake, 19, mode="resume"))
    first = json.loads(lake.get(f"out/ds=19/{SUMMARY_PARTS}"))["parts"]
    assert [Summary.from_dict(p["summary"]).rows for p in first] == [300, 300, 300]
    write_files(tmp_path / "changed", [make_table(120, seed=99, start_id=50_000)])  # the last input changed
    lake.put("events/ds=19/part-2.parquet", (tmp_path / "changed" / "part-0.parquet").read_bytes())
    caplog.set_level(logging.WARNING, logger="batchscore")
    report = batchscore.run(spec(lake, 19, mode="resume"))
    assert report.parts_skipped == 2 and report.rows_written == 120
    assert "the summary covers" not in caplog.text
    saved = load(lake.uri("out/ds=19"), options=lake.server.options())
    assert saved.coverage == {"parts": 3, "parts_total": 3, "missing_parts": [], "rows": 720}
    assert saved.summary.features["f0"].rows == 720
    parts = json.loads(lake.get(f"out/ds=19/{SUMMARY_PARTS}"))["parts"]
    assert [p["run_id"] for p in parts[:2]] == [p["run_id"] for p in first[:2]]  # kept, not rescored
    assert [p["summary"] for p in parts[:2]] == [p["summary"] for p in first[:2]]  # carried over as they were
    assert parts[2]["run_id"] == report.run_id and Summary.from_dict(parts[2]["summary"]).rows == 120


def test_summaries_on_either_store_serve_as_reference_and_report(remote, models, tmp_path):
    """Read-only on GCS too: an output folder copied to the store is a reference and can be reported."""
    for day in (19, 20):
        night(tmp_path / "events", day, files=1)
    local = batchscore.JobSpec(
        inputs=(str(tmp_path / "events" / "ds=19"),), model=str(models["logreg"]), out=str(tmp_path / "out"), keep=KEEP
    )
    batchscore.run(local)
    reference = remote.upload(tmp_path / "out", "out/ds=19")
    options = remote.server.options()
    assert drift.load_reference(reference, options=options) is not None
    report = batchscore.run(
        local.replace(
            inputs=(str(tmp_path / "events" / "ds=20"),),
            out=str(tmp_path / "out-20"),
            reference=reference,
            storage_options=options,
        )
    )
    assert report.drift is not None and report.drift["reference"] == reference
    shown = cli("report", reference, "--json", *remote.server.cli_options())
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["summary"]["rows"] == 300
    review = drift.review(str(tmp_path / "out-20"), options=options)  # the run's own reference, on the store
    assert review.reference is not None and review.reference.path == f"{reference}/{SUMMARY}"
    assert pq.read_metadata(tmp_path / "out-20" / "part-00000.parquet").num_rows == 300
