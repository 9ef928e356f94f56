"""Drift, summary to summary: a synthetic shift is caught column by column, an unchanged night is not,
and --on-drift tells a scheduler what it should (exit 6 with the output committed, or a warning)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, cli

import batchscore
from batchscore import drift
from batchscore.summary import SUMMARY, SUMMARY_PARTS, NumericStats, Summary

DEMO = ROOT / "data" / "demo"
COLUMNS_MODEL = DEMO / "model_columns.onnx"
"""Fed from annual_income, age, debt_to_income, external_risk_score, region and product."""
FEATURES = {"annual_income", "age", "debt_to_income", "external_risk_score", "region", "product"}


def night(day: str) -> pa.Table:
    return pq.read_table(DEMO / f"ds={day}" / "part-0.parquet")


def shifted(table: pa.Table) -> pa.Table:
    """An upstream change: income in another unit (x10), a category renamed, a column arriving all-null."""
    table = table.set_column(
        table.schema.get_field_index("annual_income"), "annual_income", pc.multiply(table["annual_income"], 10.0)
    )
    region = pc.replace_substring(table["region"], "north", "North")
    table = table.set_column(table.schema.get_field_index("region"), "region", region)
    nulls = pa.nulls(table.num_rows, pa.float64())
    return table.set_column(table.schema.get_field_index("debt_to_income"), "debt_to_income", nulls)


def write(table: pa.Table, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / "part-0.parquet")
    return folder


def score_args(inputs: Path, out: Path, *extra: str | Path) -> list[str | Path]:
    return [
        "score",
        inputs,
        "--model",
        COLUMNS_MODEL,
        "--input",
        "income=annual_income",
        "--keep",
        "application_id",
        "--on-null",
        "fill",
        "--out",
        out,
        *extra,
    ]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The night before, scored and summarized once for the module."""
    root = tmp_path_factory.mktemp("reference")
    out = root / "out"
    result = cli(*score_args(write(night("2026-11-19"), root / "in"), out))
    assert result.returncode == 0, result.stderr
    return out


# -- PSI ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "cur"),
    [
        ([0.5, 0.5], [0.5, 0.5]),  # the same shares: 0
        ([0.5, 0.5], [0.6, 0.4]),  # a small move
        ([0.2, 0.8], [0.0, 1.0]),  # an emptied bin counts as a share of EPSILON, not as infinity
        ([0.0, 1.0], [0.2, 0.8]),  # a new bin, the same
    ],
)
def test_psi_is_the_usual_sum(ref, cur):
    def share(x: float) -> float:
        return max(x, drift.EPSILON)

    direct = sum((share(c) - share(r)) * math.log(share(c) / share(r)) for r, c in zip(ref, cur, strict=True))
    assert drift.psi(ref, cur) == pytest.approx(direct)
    assert drift.psi(ref, cur) >= 0 and (drift.psi(ref, cur) == 0) == (ref == cur)


def numeric(values: np.ndarray) -> NumericStats:
    summary = Summary.create({"x": pa.float64()}, {})
    summary.update(pa.record_batch({"x": pa.array(values)}), [])
    stats = summary.features["x"]
    assert isinstance(stats, NumericStats)
    return stats


@pytest.mark.parametrize(
    ("shift", "reading"),
    [
        (0.0, "stable"),  # a fresh sample of the same distribution
        (0.4, "moderate"),  # 0.4 standard deviations
        (1.0, "major"),  # a whole one
    ],
)
def test_psi_on_the_reference_deciles_reads_as_usual(shift, reading):
    rng = np.random.default_rng(3)
    ref, cur = numeric(rng.normal(size=50_000)), numeric(rng.normal(loc=shift, size=50_000))
    value = drift.psi(drift.bin_shares(ref, drift.decile_edges(ref)), drift.bin_shares(cur, drift.decile_edges(ref)))
    column = drift.ColumnDrift("x", "feature", "numeric", psi=value)
    assert column.reading == reading, value


# -- a shifted night and an unchanged one, end to end ---------------------------------------------------


def test_a_synthetic_shift_flags_exactly_the_changed_features(reference, tmp_path):
    out = tmp_path / "out"
    inputs = write(shifted(night("2026-11-20")), tmp_path / "in")
    result = cli(*score_args(inputs, out, "--reference", reference, "--report", tmp_path / "report.json"))
    assert result.returncode == 0, result.stderr  # --on-drift warn is the default
    assert "WARNING" in result.stderr and "drift against" in result.stderr
    report = json.loads((tmp_path / "report.json").read_text())["drift"]
    columns = {c["column"]: c for c in report["columns"] if c["role"] == "feature"}
    flagged = {name for name, c in columns.items() if c["flagged"]}
    assert flagged == {"annual_income", "region", "debt_to_income"}
    assert columns["annual_income"]["psi"] > 1.0 and columns["annual_income"]["reading"] == "major"
    assert columns["region"]["new"] == ["North"] and columns["region"]["vanished"] == ["north"]
    assert columns["debt_to_income"]["null_rate"] == 1.0 and columns["debt_to_income"]["reference_null_rate"] == 0.0
    for name in FEATURES - flagged:
        assert columns[name]["psi"] < 0.1, name
    assert report["columns"][0]["flagged"]  # worst first
    assert report["flagged"][:3] != []


def test_an_unchanged_night_is_not_flagged(reference, tmp_path):
    out = tmp_path / "out"
    result = cli(*score_args(write(night("2026-11-20"), tmp_path / "in"), out, "--reference", reference))
    assert result.returncode == 0, result.stderr
    assert "no drift against" in result.stderr
    saved = json.loads((out / SUMMARY).read_text())
    assert saved["drift"]["flagged"] == []
    assert max(c["psi"] for c in saved["drift"]["columns"]) < 0.05  # well under 0.1


def test_on_drift_fail_exits_6_with_the_output_committed_and_a_retry_fails_again(reference, tmp_path):
    out = tmp_path / "out"
    inputs = write(shifted(night("2026-11-20")), tmp_path / "in")
    result = cli(*score_args(inputs, out, "--reference", reference, "--on-drift", "fail"))
    assert result.returncode == 6, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("batchscore: error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert "annual_income" in errors[0] and "committed" in errors[0]
    assert (out / "_SUCCESS").exists() and (out / "part-00000.parquet").exists() and (out / SUMMARY).exists()
    assert pq.read_metadata(out / "part-00000.parquet").num_rows == 49_000
    # A scheduler's retry finds the output complete, scores nothing, and fails again: a person must look.
    retry = cli(*score_args(inputs, out, "--reference", reference, "--on-drift", "fail", "--mode", "resume"))
    assert retry.returncode == 6, retry.stderr
    assert "nothing to score" in retry.stderr
    accepted = cli(*score_args(inputs, out, "--reference", reference, "--on-drift", "warn", "--mode", "resume"))
    assert accepted.returncode == 0 and "drift against" in accepted.stderr


def test_the_python_api_raises_drift_error_after_committing(reference, tmp_path):
    spec = batchscore.JobSpec(
        inputs=(str(write(shifted(night("2026-11-20")), tmp_path / "in")),),
        model=str(COLUMNS_MODEL),
        out=str(tmp_path / "out"),
        input_columns={"income": "annual_income"},
        keep=("application_id",),
        on_null="fill",
        reference=str(reference),
        max_psi=0.5,
        on_drift="fail",
    )
    with pytest.raises(batchscore.DriftError, match="annual_income") as caught:
        batchscore.run(spec)
    assert caught.value.exit_code == 6
    assert (tmp_path / "out" / "_SUCCESS").exists()


def test_a_missing_reference_is_a_warning_on_the_first_night(tmp_path):
    out = tmp_path / "out"
    inputs = write(night("2026-11-20"), tmp_path / "in")
    result = cli(*score_args(inputs, out, "--reference", tmp_path / "nothing-yet", "--on-drift", "fail"))
    assert result.returncode == 0, result.stderr
    assert "WARNING" in result.stderr and "first run?" in result.stderr
    assert json.loads((out / SUMMARY).read_text())["drift"] is None


def test_a_reference_that_is_not_a_summary_fails_before_scoring(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"rows": 3}')
    out = tmp_path / "out"
    result = cli(*score_args(write(night("2026-11-20"), tmp_path / "in"), out, "--reference", bad))
    assert result.returncode == 3, result.stderr
    assert "is not a batchscore summary" in result.stderr
    assert not out.exists()


def test_a_saved_summary_file_serves_as_reference(reference, tmp_path):
    saved = tmp_path / "last_good_summary.json"
    saved.write_bytes((reference / SUMMARY).read_bytes())
    out = tmp_path / "out"
    result = cli(*score_args(write(night("2026-11-20"), tmp_path / "in"), out, "--reference", saved))
    assert result.returncode == 0 and "no drift against" in result.stderr


def test_report_shows_the_drift_table_worst_first(reference, tmp_path):
    out = tmp_path / "out"
    inputs = write(shifted(night("2026-11-20")), tmp_path / "in")
    assert cli(*score_args(inputs, out, "--reference", reference)).returncode == 0
    shown = cli("report", out)  # the run's own reference
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    headline = next(i for i, line in enumerate(lines) if line.startswith("drift against"))
    assert lines[headline + 1].split()[:2] == ["column", "role"]
    table = lines[headline + 2 : lines.index("", headline)]
    flags = ["DRIFT" in line for line in table]
    assert flags == sorted(flags, reverse=True)  # the columns over the limits first
    assert {"annual_income", "region", "debt_to_income"} <= {line.split()[0] for line in table if "DRIFT" in line}
    assert "features:" in shown.stdout and "outputs:" in shown.stdout
    as_json = json.loads(cli("report", out, "--reference", reference, "--json").stdout)
    assert "annual_income" in as_json["drift"]["flagged"]
    itself = json.loads(cli("report", out, "--reference", out, "--json").stdout)
    assert itself["drift"]["flagged"] == []


def test_drift_options_are_validated():
    with pytest.raises(batchscore.JobSpecError, match=r"on_drift must be one of warn\|fail"):
        batchscore.JobSpec(inputs=("x",), model="m", out="o", on_drift="stop")  # type: ignore[arg-type]
    with pytest.raises(batchscore.JobSpecError, match="max_psi must be a positive number"):
        batchscore.JobSpec(inputs=("x",), model="m", out="o", max_psi=0)
    with pytest.raises(batchscore.JobSpecError, match="needs this run's summary"):
        batchscore.JobSpec(inputs=("x",), model="m", out="o", reference="r", summary=False)


def test_no_summary_writes_none_and_removes_an_older_one(reference, tmp_path):
    out = tmp_path / "out"
    inputs = write(night("2026-11-20"), tmp_path / "in")
    assert cli(*score_args(inputs, out)).returncode == 0
    assert (out / SUMMARY).exists() and (out / SUMMARY_PARTS).exists()
    manifest = json.loads((out / "_batchscore.json").read_text())
    assert manifest["summary"] == SUMMARY
    assert cli(*score_args(inputs, out, "--mode", "overwrite", "--no-summary")).returncode == 0
    assert not (out / SUMMARY).exists() and not (out / SUMMARY_PARTS).exists()
    assert json.loads((out / "_batchscore.json").read_text())["summary"] is None


def test_report_checks_storage_options_even_for_local_paths(reference):
    result = cli("report", reference, "--storage-option", "endpont_override=127.0.0.1:9000")
    assert result.returncode == 2, result.stderr
    assert "unknown storage option 'endpont_override' (did you mean 'endpoint_override'?)" in result.stderr


@pytest.mark.parametrize(
    ("output", "reference", "flags"),
    [
        ("out/ds=2026-11-20", "out/ds=2026-11-19", False),  # local: the command as it is
        ("s3://lake/scores/ds=2026-11-20", "s3://lake/scores/ds=2026-11-19", True),  # report needs the options too
        ("out/ds=2026-11-20", "gs://lake/saved.json", True),  # a reference in a bucket is enough
    ],
)
def test_the_drift_error_names_the_report_command(output, reference, flags):
    column = drift.ColumnDrift("x", "feature", "numeric", psi=2.0, reasons=("PSI 2.000",))
    report = drift.DriftReport(reference=reference, max_psi=0.25, max_null_rate_change=0.1, columns=(column,))
    with pytest.raises(batchscore.DriftError) as caught:
        drift.enforce(report, on_drift="fail", output=output)
    assert f"`batchscore report {output} --reference {reference}`" in str(caught.value)
    assert ("--storage-option" in str(caught.value)) == flags
