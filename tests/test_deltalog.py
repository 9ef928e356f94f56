"""batchscore inspect OUT: a Delta table's versions, read from its log only."""

from __future__ import annotations

import pytest
from conftest import DAYS, cli, day_files, nightly

import batchscore
from batchscore.deltalog import describe

pytest.importorskip("deltalake")


def test_inspect_shows_each_version_with_date_rows_and_model(models, tmp_path):
    for ds in DAYS:
        day_files(tmp_path, ds)
        batchscore.run(nightly(tmp_path, ds, models["logreg"]))
    result = cli("inspect", tmp_path / "table")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "partition_by: ds" in lines and "rows: 5500" in lines
    versions = [ln.strip() for ln in lines if ln.startswith("  v")]
    assert versions[0].startswith("v1 ") and "ds=2026-11-21  2,500 rows  model logreg.onnx" in versions[0]
    assert versions[1].startswith("v0 ") and "ds=2026-11-20  3,000 rows" in versions[1]
    info = describe(str(tmp_path / "table"))
    assert [v["rows"] for v in info["history"]] == [2500, 3000]
    assert info["history"][0]["model_sha256"] == batchscore.Model(str(models["logreg"]), device="cpu").sha256
