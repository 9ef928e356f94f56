"""A smoke run of the benchmark, so `make bench` cannot rot; it asserts what was measured, never how fast."""

from __future__ import annotations

import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import bench


def test_bench_quick_smoke(tmp_path):
    results = bench.main(
        [
            "--quick",
            "--rows",
            "20000",
            "--models",
            "logreg",
            "--json",
            str(tmp_path / "r.json"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--skip",
            "flatness,startup",
            "--row-group-rows",
            "300000",  # just above the rows read whole: the streamed path
            "--engines",
            "local,processes",  # ray and the Ray Data peer start a cluster: make bench only
            "--engine-models",
            "logreg",
        ]
    )
    logreg = results["models"]["logreg"]
    for contender in ("batchscore", "no_summary", "plain", "polars_read_all", "polars_select", "inference"):
        measured = logreg["contenders"][contender]
        assert measured["ok"], measured
        assert measured["rows"] == 20000
        assert measured["rows_per_s"] > 0 and measured["peak_rss_mb"] > 0
    for layout in ("one_group", "many_groups"):
        measured = results["row_group"][layout]
        assert measured["ok"] and measured["rows_in_output"] == 300000 and measured["peak_rss_mb"] > 0, measured
    assert logreg["ratios"]["summary_cost"] is not None  # the run summary's cost is shown (issue 11)
    engines = results["engines"]["logreg"]
    for engine in ("local", "processes"):
        assert engines[engine]["ok"], engines[engine]
        assert engines[engine]["rows"] == 20000 and engines[engine]["in_order"] and engines[engine]["files_out"] == 4
        assert engines[engine]["tree_peak_mb"] >= engines[engine]["peak_rss_mb"] > 0
    stages = engines["stage_cpu"]["cpu_us_per_row"]
    assert set(stages) == {"read", "assemble", "infer", "write"} and all(v > 0 for v in stages.values())
    assert engines["stage_cpu"]["projection"]["cores_64"]["rows_per_s"] > 0
    assert (tmp_path / "r.json").exists()
    assert logreg["ratios"]["batchscore/best_peer by round"]  # one ratio per round
    names = [check["name"] for check in results["checks"]]
    assert "logreg: batchscore >= 1.4x best peer" in names and "logreg: in-run rate >= 3M rows/s" in names


def test_bench_startup_and_rounds(tmp_path):
    """Two interleaved rounds give medians; start-up times a 10-row score as a whole process."""
    results = bench.main(
        [
            "--quick",
            "--rows",
            "8000",
            "--files",
            "2",
            "--rounds",
            "2",
            "--models",
            "logreg",
            "--json",
            str(tmp_path / "r.json"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--skip",
            "inference,stages,flatness",
        ]
    )
    contenders = results["models"]["logreg"]["contenders"]
    assert all(len(contenders[c]["rounds_rows_per_s"]) == 2 for c in bench.E2E)
    startup = results["startup"]
    assert startup["import_s"] > 0 and startup["score_10_rows_s"] > 0, startup
    names = [check["name"] for check in results["checks"]]
    assert "start-up: batchscore score, 10 rows" in names and "start-up: import batchscore" in names
