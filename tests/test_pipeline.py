"""End to end through the library: parity with a direct onnxruntime run, rows, order, passthrough."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import FEATURES, direct_run, make_table, table_matrix, write_files
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import batchscore
from batchscore import JobSpec, NullValuesError
from batchscore.reader import resolve_inputs, scan


def score(inputs: list[Path] | Path, model: Path, out: Path, **options: object) -> batchscore.RunReport:
    paths = inputs if isinstance(inputs, list) else [inputs]
    spec = JobSpec(
        inputs=tuple(str(p) for p in paths), model=str(model), out=str(out), keep=("id", "segment"), **options
    )
    return batchscore.run(spec)


def read_out(out: Path) -> pa.Table:
    return pq.read_table(sorted(out.glob("*.parquet")))


@pytest.mark.parametrize(
    ("name", "labels"),
    [
        ("logreg_zipmap", ["0", "1", "2"]),  # skl2onnx default: ZipMap cut out at load time
        ("logreg", ["0", "1", "2"]),  # zipmap=False: the float tensor as is
        ("forest", ["0", "1", "2"]),  # tree ensemble with ZipMap
        ("strings", ["high", "low", "mid"]),  # string class labels, in the model's order
        ("mlp", ["high", "low", "mid"]),  # no classifier node: labels from skl2onnx's 'classes' initializer
    ],
)
def test_classifier_parity_with_direct_onnxruntime(models, dataset, tmp_path, name, labels):
    files = dataset(files=2, rows=1500)
    report = score(files, models[name], tmp_path / "out")
    got = read_out(tmp_path / "out")
    x = np.concatenate([table_matrix(f) for f in files])
    want_label, want_prob = direct_run(models[name], x)
    if isinstance(want_prob, list):  # ZipMap: a list of {label: probability}
        want_prob = np.array([[row[k] for k in row] for row in want_prob], dtype=np.float32)
    assert got.column_names == ["id", "segment", "prediction"] + [f"prob_{lab}" for lab in labels]
    assert got["prediction"].to_pylist() == want_label.tolist()
    probs = np.column_stack([got[f"prob_{lab}"].to_numpy() for lab in labels])
    np.testing.assert_array_equal(probs, want_prob)
    assert report.rows_read == report.rows_written == 3000


def test_regressor_n1_output_becomes_prediction(models, dataset, tmp_path):
    files = dataset(files=1, rows=700)
    score(files, models["regressor"], tmp_path / "out")
    got = read_out(tmp_path / "out")
    (want,) = direct_run(models["regressor"], table_matrix(files[0]))
    assert want.shape == (700, 1)
    assert got.column_names == ["id", "segment", "prediction"]
    assert got.schema.field("prediction").type == pa.float32()
    np.testing.assert_array_equal(got["prediction"].to_numpy(), want[:, 0])


def test_float64_input_model_is_fed_float64(models, dataset, tmp_path):
    files = dataset(files=1, rows=500)
    score(files, models["regressor64"], tmp_path / "out")
    got = read_out(tmp_path / "out")
    (want,) = direct_run(models["regressor64"], table_matrix(files[0], np.float64))
    assert got.schema.field("prediction").type == pa.float64()
    np.testing.assert_array_equal(got["prediction"].to_numpy(), want[:, 0])


def test_generic_outputs_become_columns_named_after_them(models, dataset, tmp_path):
    files = dataset(files=1, rows=300)
    score(files, models["generic"], tmp_path / "out")
    got = read_out(tmp_path / "out")
    total, doubled = direct_run(models["generic"], table_matrix(files[0]))
    assert got.column_names == ["id", "segment", "total", "doubled"]
    np.testing.assert_array_equal(got["total"].to_numpy(), total)
    np.testing.assert_array_equal(np.array(got["doubled"].to_pylist(), dtype=np.float32), doubled)


def test_prob_format_list(models, dataset, tmp_path):
    files = dataset(files=1, rows=200)
    score(files, models["logreg"], tmp_path / "out", prob_format="list")
    got = read_out(tmp_path / "out")
    _, want = direct_run(models["logreg"], table_matrix(files[0]))
    assert got.schema.field("probabilities").type == pa.list_(pa.float32())
    np.testing.assert_array_equal(np.array(got["probabilities"].to_pylist(), dtype=np.float32), want)


def test_one_part_per_file_in_sorted_order_rows_in_order(models, dataset, tmp_path):
    files = dataset(files=3, rows=2500)
    score(tmp_path / "in", models["logreg"], tmp_path / "out", batch_size=700)
    parts = sorted(p.name for p in (tmp_path / "out").iterdir())
    summaries = ["_batchscore_summary.json", "_batchscore_summary_parts.json"]  # issue 11
    assert parts == [
        "_SUCCESS",
        "_batchscore.json",
        *summaries,
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    for i, f in enumerate(files):
        part = pq.read_table(tmp_path / "out" / f"part-{i:05d}.parquet")
        source = pq.read_table(f)
        assert part["id"].equals(source["id"])
        assert part["segment"].equals(source["segment"])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=900), min_size=1, max_size=4),
    batch_size=st.integers(min_value=1, max_value=1000),
)
def test_rows_out_equal_rows_in_whatever_the_batching(models, tmp_path_factory, sizes, batch_size):
    root = tmp_path_factory.mktemp("prop")
    tables = []
    start = 0
    for i, n in enumerate(sizes):
        tables.append(make_table(n, seed=i, start_id=start))
        start += n
    write_files(root / "in", tables, row_group_size=333)
    report = score(root / "in", models["logreg"], root / "out", batch_size=batch_size)
    got = read_out(root / "out")
    assert report.rows_written == sum(sizes) == got.num_rows
    assert got["id"].to_pylist() == list(range(sum(sizes)))
    if sum(sizes):
        x = np.concatenate([np.column_stack([t[c].to_numpy() for c in FEATURES]) for t in tables]).astype(np.float32)
        _, want = direct_run(models["logreg"], x)
        np.testing.assert_allclose(got["prob_0"].to_numpy(), want[:, 0], rtol=1e-5, atol=1e-7)


def test_hive_partition_folders_become_typed_columns(models, tmp_path):
    write_files(tmp_path / "in" / "ds=2026-11-20" / "region=eu", [make_table(100, seed=1)])
    write_files(tmp_path / "in" / "ds=2026-11-21" / "region=us", [make_table(50, seed=2)])
    spec = JobSpec(
        inputs=(str(tmp_path / "in"),), model=str(models["logreg"]), out=str(tmp_path / "out"), features=tuple(FEATURES)
    )
    report = batchscore.run(spec)  # keep defaults to every non-feature column, partitions included
    got = read_out(tmp_path / "out")
    assert report.keep == ["id", "segment", "ds", "region"]
    assert report.features == FEATURES
    assert got.schema.field("ds").type == pa.date32() and got.schema.field("region").type == pa.string()
    assert [d.isoformat() for d in got["ds"].to_pylist()] == ["2026-11-20"] * 100 + ["2026-11-21"] * 50
    assert got["region"].to_pylist() == ["eu"] * 100 + ["us"] * 50


def test_typed_partitions_are_the_same_in_filter_features_and_output(models, tmp_path):
    """month=7 is a number when read, filtered (month = 7), fed to the model and written back as a folder."""
    for month, seed in ((7, 1), (12, 2)):
        table = make_table(40, seed=seed).drop_columns(["f5"])
        write_files(tmp_path / "in" / f"month={month}" / "ds=2026-11-20", [table])
    spec = JobSpec(
        inputs=(str(tmp_path / "in"),),
        model=str(models["regressor"]),
        out=str(tmp_path / "out"),
        features=(*FEATURES[:5], "month"),  # a folder value feeding a float input
        keep=("id", "ds"),
        filter="month = 7 AND ds = DATE '2026-11-20'",
        partition_by=("ds",),
    )
    report = batchscore.run(spec)
    assert report.rows_written == 40 and report.rows_filtered == 40
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith("_")) == ["ds=2026-11-20"]
    (day,) = scan(resolve_inputs([str(tmp_path / "out")]))  # read back: the folder is a date again
    assert day.full_schema.field("ds").type == pa.date32()
    got = pq.read_table(day.path)
    x = pq.read_table(tmp_path / "in" / "month=7" / "ds=2026-11-20" / "part-0.parquet")
    matrix = np.column_stack([*(x[c].to_numpy() for c in FEATURES[:5]), np.full(40, 7.0)]).astype(np.float32)
    np.testing.assert_allclose(got["prediction"].to_numpy(), direct_run(models["regressor"], matrix)[0].ravel())


def test_a_filter_that_removes_a_whole_file_leaves_an_empty_part(models, tmp_path):
    """One part per input file, even an empty one (0 rows, the full schema): resume knows the file is done,
    and every engine reads it as no rows. With partition_by it leaves no file at all."""
    files = write_files(tmp_path / "in", [make_table(30, seed=1), make_table(30, seed=2, start_id=100)])
    report = score(files, models["logreg"], tmp_path / "out", filter="id >= 100")
    assert report.rows_written == 30 and report.rows_filtered == 30
    parts = sorted((tmp_path / "out").glob("*.parquet"))
    assert [pq.read_metadata(p).num_rows for p in parts] == [0, 30]
    assert pq.read_schema(parts[0]).names == ["id", "segment", "prediction", "prob_0", "prob_1", "prob_2"]
    import duckdb
    import polars as pl

    assert pl.read_parquet(tmp_path / "out" / "*.parquet")["id"].to_list() == list(range(100, 130))
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{tmp_path}/out/*.parquet')").fetchall() == [(30,)]
    split = score(files, models["logreg"], tmp_path / "split", filter="id >= 100", partition_by=("segment",))
    assert split.rows_written == 30 and (tmp_path / "split" / "_SUCCESS").exists()
    written = sorted(p.name for p in (tmp_path / "split").glob("*/*.parquet"))
    assert written and all(name.startswith("part-00001-") for name in written)


def _with_nulls(tmp_path: Path) -> Path:
    table = make_table(10, seed=3)
    f2 = table["f2"].to_pylist()
    f2[1] = f2[4] = None
    table = table.set_column(table.schema.get_field_index("f2"), "f2", pa.array(f2, pa.float64()))
    return write_files(tmp_path / "nulls", [table])[0]


def test_on_null_error_names_column_file_and_count(models, tmp_path):
    path = _with_nulls(tmp_path)
    with pytest.raises(NullValuesError, match=r"'f2' has 2 null value\(s\) in .*part-0.parquet; pass --on-null"):
        score(path, models["logreg"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_on_null_fill_uses_fill_value(models, tmp_path):
    path = _with_nulls(tmp_path)
    report = score(path, models["logreg"], tmp_path / "out", on_null="fill", fill_value=1.5)
    x = table_matrix(path)
    x[[1, 4], 2] = 1.5
    _, want = direct_run(models["logreg"], x)
    np.testing.assert_array_equal(read_out(tmp_path / "out")["prob_1"].to_numpy(), want[:, 1])
    assert report.null_counts == {"f2": 2}


def test_on_null_skip_keeps_row_with_null_outputs(models, tmp_path):
    path = _with_nulls(tmp_path)
    report = score(path, models["logreg"], tmp_path / "out", on_null="skip")
    got = read_out(tmp_path / "out")
    assert got.num_rows == 10
    for col in ("prediction", "prob_0", "prob_1", "prob_2"):
        assert got[col].null_count == 2
        assert got[col][1].as_py() is None and got[col][4].as_py() is None
    assert report.rows_null_output == 2
    _, want = direct_run(models["logreg"], table_matrix(path))
    assert got["prob_0"][0].as_py() == pytest.approx(float(want[0, 0]))


def test_numeric_types_of_any_width_are_cast(models, tmp_path):
    base = make_table(40, seed=4)
    table = base.set_column(2, "f0", base["f0"].cast(pa.float32()))
    ints = pa.array(np.arange(40, dtype=np.int16))
    table = table.set_column(3, "f1", ints)
    table = table.set_column(4, "f2", pa.array([i % 2 == 0 for i in range(40)]))
    table = table.set_column(5, "f3", pa.array(base["f3"].to_pylist(), pa.float64()).cast(pa.decimal128(20, 6)))
    path = write_files(tmp_path / "typed", [table])[0]
    score(path, models["logreg"], tmp_path / "out")
    x = np.column_stack(
        [
            base["f0"].cast(pa.float32()).to_numpy(),
            np.arange(40),
            [i % 2 == 0 for i in range(40)],
            np.round(base["f3"].to_numpy(), 6),
            base["f4"].to_numpy(),
            base["f5"].to_numpy(),
        ]
    ).astype(np.float32)
    _, want = direct_run(models["logreg"], x)
    np.testing.assert_allclose(read_out(tmp_path / "out")["prob_0"].to_numpy(), want[:, 0], rtol=1e-5)


def test_report_file_and_footer_metadata(models, dataset, tmp_path):
    dataset(files=2, rows=100)
    report_path = tmp_path / "r" / "report.json"
    report = score(tmp_path / "in", models["logreg"], tmp_path / "out", report=str(report_path))
    data = json.loads(report_path.read_text())
    assert data["rows_read"] == data["rows_written"] == 200
    assert data["provider"] == "CPUExecutionProvider"
    assert data["model_sha256"] == report.model_sha256
    assert len(data["files"]) == 2 and data["files"][0]["rows"] == 100
    assert data["peak_rss_mb"] > 0 and data["rows_per_s"] > 0
    meta = batchscore.writer.read_metadata(str(tmp_path / "out" / "part-00000.parquet"))
    assert meta["model_sha256"] == report.model_sha256
    assert meta["provider"] == "CPUExecutionProvider"
    assert meta["features"] == FEATURES
    assert meta["run_id"] == report.run_id


def test_a_report_lost_after_the_commit_does_not_fail_the_run(models, dataset, tmp_path, caplog, monkeypatch):
    """The output is committed before the report is written: a report that cannot be written then is an error
    line, not a failed run that every retry fails again."""
    monkeypatch.setattr(logging.getLogger("batchscore"), "propagate", True)  # an in-process CLI run may have cut it
    dataset(files=1, rows=50)
    reports = tmp_path / "reports"
    reports.mkdir()

    def folder_becomes_a_file(progress: batchscore.Progress) -> None:  # passes the check, fails the write
        if reports.is_dir():
            reports.rmdir()
            reports.write_text("not a folder any more")

    spec = JobSpec(
        inputs=(str(tmp_path / "in"),),
        model=str(models["logreg"]),
        out=str(tmp_path / "out"),
        keep=("id", "segment"),
        report=str(reports / "r.json"),
    )
    report = batchscore.run(spec, progress=folder_becomes_a_file)
    assert report.rows_written == 50 and (tmp_path / "out" / "_SUCCESS").exists()
    assert "the output is committed, but the report is not: cannot write report" in caplog.text


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into any folder")
def test_an_unwritable_report_folder_fails_before_the_first_row(models, dataset, tmp_path):
    dataset(files=1, rows=10)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(batchscore.OutputError, match=r"folder .*locked is not writable"):
        score(tmp_path / "in", models["logreg"], tmp_path / "out", report=str(locked / "r.json"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("call_rows", [100, 333, 1000])  # even, ragged, and one call per batch
def test_cpu_calls_are_sliced_and_joined_back_in_order(models, dataset, tmp_path, monkeypatch, call_rows):
    from batchscore import scorer

    monkeypatch.setattr(scorer, "CPU_CALL_ROWS", call_rows)
    files = dataset(files=1, rows=2500)
    score(files, models["mlp"], tmp_path / "out", batch_size=1000)
    got = read_out(tmp_path / "out")
    labels, probs = direct_run(models["mlp"], table_matrix(files[0]))
    assert got["prediction"].to_pylist() == labels.tolist()
    np.testing.assert_array_equal(got["prob_high"].to_numpy(), probs[:, 0])


def test_assembly_in_its_own_thread_gives_the_same_output(models, tmp_path, monkeypatch):
    """The GPU's four-stage pipeline, forced on the CPU: same rows, same numbers, same per-part null counts."""
    from batchscore import tasks

    tables = []
    for i in range(3):
        table = make_table(3000, seed=i, start_id=i * 3000)
        f1 = table["f1"].to_pylist()
        for row in range(i, 3000, 700):  # 5, 5 and 5 nulls
            f1[row] = None
        tables.append(table.set_column(table.schema.get_field_index("f1"), "f1", pa.array(f1, pa.float64())))
    write_files(tmp_path / "in", tables, row_group_size=512)
    runs = {}
    for name, providers in (("inline", frozenset()), ("threaded", frozenset({"CPUExecutionProvider"}))):
        monkeypatch.setattr(tasks, "ASSEMBLE_IN_THREAD", providers)
        out = tmp_path / name
        report = score(tmp_path / "in", models["logreg"], out, batch_size=256, on_null="fill", mode="resume")
        manifest = json.loads((out / "_batchscore.json").read_text())
        runs[name] = (read_out(out), [p["null_counts"] for p in manifest["parts"]], report.null_counts)
    inline, threaded = runs["inline"], runs["threaded"]
    assert threaded[0].equals(inline[0])
    assert threaded[1] == inline[1] == [{"f1": 5}, {"f1": 5}, {"f1": 5}]
    assert threaded[2] == inline[2] == {"f1": 15}


@pytest.mark.parametrize(
    ("columns", "depth"),
    [
        ([pa.int64(), pa.int64(), pa.float32(), pa.float32()], 16),  # an id and a classifier's outputs: 24 B a row
        ([pa.int64(), pa.string(), pa.list_(pa.float32())], 3),  # variable-width columns counted as 64 B a row
        ([pa.float64()] * 100, 1),  # wide passthrough columns: one batch of room, as before
    ],
)
def test_scored_output_waiting_for_the_writer_is_bounded_in_bytes(columns, depth):
    from batchscore.tasks import _write_queue_depth

    schema = pa.schema([(f"c{i}", t) for i, t in enumerate(columns)])
    assert _write_queue_depth(schema, 65536) == depth
