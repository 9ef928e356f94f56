"""The commit owns its files, survives crashes and full disks at every step, and never writes wrong numbers."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import FEATURES, N_FEATURES, ROOT, cli, make_table, write_files
from onnx import TensorProto, helper

import batchscore
from batchscore import storage
from batchscore.errors import ModelError, OutputError, OutputExistsError
from batchscore.writer import JOURNAL, WORK

KEEP = ("id", "segment")


def spec(tmp_path: Path, model: Path, *, out: str = "out", **changes: object) -> batchscore.JobSpec:
    base = batchscore.JobSpec(inputs=(str(tmp_path / "in"),), model=str(model), out=str(tmp_path / out), keep=KEEP)
    return base.replace(**changes)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below a folder, hidden ones included, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def visible(out: Path) -> dict[str, list[int]]:
    """What a reader globbing **/*.parquet sees: each part's ids (also proves each part is complete)."""
    return {str(p.relative_to(out)): pq.read_table(p)["id"].to_pylist() for p in sorted(out.rglob("*.parquet"))}


# -- a commit that owns its files -----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["error", "overwrite", "resume"])
def test_foreign_parquet_files_survive_every_mode(models, dataset, tmp_path, mode):
    dataset(files=2, rows=50)
    out = tmp_path / "out"
    write_files(out, [make_table(5)])  # somebody else's part-0.parquet
    write_files(out / "old", [make_table(7)])
    before = snapshot(out)
    with pytest.raises(OutputExistsError, match=r"holds 2 Parquet file\(s\) that no batchscore manifest there lists"):
        batchscore.run(spec(tmp_path, models["logreg"], mode=mode))
    assert snapshot(out) == before


def test_the_parent_of_nightly_outputs_is_refused_and_every_night_survives(models, dataset, tmp_path):
    dataset(files=2, rows=50)
    for night in ("ds=2026-11-19", "ds=2026-11-20"):
        batchscore.run(spec(tmp_path, models["logreg"], out=f"nightly/{night}"))
    before = snapshot(tmp_path / "nightly")
    with pytest.raises(OutputExistsError, match=r"ds=2026-11-19/part-00000\.parquet"):
        batchscore.run(spec(tmp_path, models["logreg"], out="nightly", mode="overwrite"))
    assert snapshot(tmp_path / "nightly") == before


@pytest.mark.parametrize(
    ("out", "needle"),
    [
        ("in", "is a folder holding the input"),  # scoring a folder into itself
        (".", "is a folder holding the input"),  # the parent of the input folder
        ("in/part-0.parquet", "is the input"),  # an input file itself
    ],
)
def test_out_equal_to_or_above_an_input_is_refused_before_reading(models, dataset, tmp_path, out, needle):
    dataset(files=2, rows=50)
    before = snapshot(tmp_path / "in")
    result = cli("score", "in", "-m", models["logreg"], "-o", out, "--keep", ",".join(KEEP), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr and "choose another --out" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert snapshot(tmp_path / "in") == before


def test_an_output_nested_in_the_input_folder_is_never_read_back(models, dataset, tmp_path):
    dataset(files=2, rows=50)
    first = batchscore.run(spec(tmp_path, models["logreg"], out="in/scores"))
    again = batchscore.run(spec(tmp_path, models["logreg"], out="in/scores", mode="overwrite"))
    assert first.rows_written == again.rows_written == 100
    assert [Path(p).name for p in again.parts] == ["part-00000.parquet", "part-00001.parquet"]


def test_a_job_writing_to_its_own_folder_is_refused(models, dataset, tmp_path):
    dataset(files=1, rows=20)
    shutil.copy(models["logreg"], tmp_path / "m.onnx")
    job = tmp_path / "job.toml"
    job.write_text('[model]\npath = "m.onnx"\n[input]\npaths = "in"\nkeep = ["id", "segment"]\n[output]\npath = ""\n')
    result = cli("run", job)
    assert result.returncode == 2 and "is a folder holding the input" in result.stderr, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "job.toml", "m.onnx"]


# -- crashes and full disks at every step of the commit -----------------------------------------------


class Crash(BaseException):
    """Stands for kill -9: not an Exception, so nothing on the way up handles it."""


WRITES = ("write_bytes", "create_new", "open_output", "sync", "move_to", "delete", "delete_tree", "sync_folder")


def inject(monkeypatch, *, at: int, error: BaseException, only: tuple[str, ...] = WRITES) -> list[str]:
    """Make the ``at``-th storage write raise ``error``; returns the names of the calls made."""
    calls: list[str] = []
    for name in only:
        real = getattr(storage.Location, name)

        def wrapper(self, *args, _real=real, _name=name, **kwargs):
            calls.append(f"{_name} {self.name}")
            if len(calls) == at:
                raise error
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(storage.Location, name, wrapper)
    return calls


def old_and_new(tmp_path, models):
    """A committed output of 3 parts from model A; the overwrite under test scores 2 inputs with model B."""
    files = write_files(tmp_path / "in", [make_table(30, seed=i, start_id=i * 100) for i in range(3)])
    batchscore.run(spec(tmp_path, models["logreg"]))
    old = snapshot(tmp_path / "out")
    files[2].unlink()
    new = spec(tmp_path, models["forest"], mode="overwrite")
    return old, new


def test_a_crash_at_every_step_of_an_overwrite_leaves_old_output_or_a_journal_the_next_run_finishes(
    models, tmp_path, monkeypatch
):
    old, new = old_and_new(tmp_path, models)
    out = tmp_path / "out"
    journal = out / WORK / JOURNAL
    with monkeypatch.context() as m:
        calls = inject(m, at=0, error=Crash())  # count the steps only
        batchscore.run(new)
    expected = visible(out)
    assert len(expected) == 2 and len(calls) > 10
    journaled = 0
    for step in range(1, len(calls) + 1):
        shutil.rmtree(out)
        out.mkdir()
        for name, data in old.items():
            (out / name).write_bytes(data)
        with monkeypatch.context() as m:
            made = inject(m, at=step, error=Crash())
            with pytest.raises(Crash):
                batchscore.run(new)
        had_journal = journal.exists()
        if had_journal:
            journaled += 1
            assert all(len(ids) == 30 for ids in visible(out).values()), made[-1]  # complete parts only
        else:  # before the journal: the previous output, byte for byte; after it: the new one, committed
            now = {k: v for k, v in snapshot(out).items() if not k.startswith(f"{WORK}/")}
            committed = (out / "_SUCCESS").exists() and visible(out) == expected
            assert now == old or committed, made[-1]
            had_journal = committed
        mode = ["resume", "overwrite", "error"][step % 3]
        try:  # the next run, of any mode, first finishes the commit
            batchscore.run(new.replace(mode=mode))
        except OutputExistsError:
            assert mode == "error" or (mode == "resume" and not had_journal)  # resume refuses model A's output
        assert not journal.exists() and not (out / WORK).exists()
        if had_journal or mode == "overwrite":
            assert visible(out) == expected, (made[-1], mode)
        assert (out / "_SUCCESS").exists() and json.loads((out / "_batchscore.json").read_text())["complete"]
    assert journaled >= 3  # crashes landed inside the publish window too


def test_a_full_disk_at_any_write_before_the_journal_leaves_the_previous_output(models, tmp_path, monkeypatch):
    old, new = old_and_new(tmp_path, models)
    space_taking = ("write_bytes", "create_new", "open_output", "sync")
    failed = 0
    for step in range(1, 100):
        with monkeypatch.context() as m:
            calls = inject(m, at=step, error=OSError(errno.ENOSPC, "No space left on device"), only=space_taking)
            try:
                batchscore.run(new)
            except OutputError as exc:
                failed += 1
                assert "no space left on the device" in str(exc), calls[-1]
                assert snapshot(tmp_path / "out") == old, calls[-1]
                continue
        assert step > len(calls)  # every space-taking write was tried: the run went through
        break
    assert failed >= 8


def run_and_kill(tmp_path, model, *, delay: float, sig: int, mode: str) -> subprocess.Popen[str]:
    command = [
        sys.executable,
        "-m",
        "batchscore",
        "score",
        tmp_path / "in",
        "--model",
        model,
        "--out",
        tmp_path / "out",
    ]
    command += ["--keep", ",".join(KEEP), "--mode", mode, "--batch-size", "64", "-q"]
    proc = subprocess.Popen(
        list(map(str, command)), stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    time.sleep(delay)
    proc.send_signal(sig)
    return proc


@pytest.mark.slow
def test_random_kills_and_sigterms_of_an_overwrite_never_lose_the_output(models, tmp_path):
    """kill -9 or SIGTERM at a random moment: old or new output (or a journal), and the next run finishes."""
    trials = int(os.environ.get("BATCHSCORE_KILL_TRIALS", "100"))
    rng = random.Random(8)
    write_files(tmp_path / "in", [make_table(400, seed=i, start_id=i * 1000) for i in range(12)], row_group_size=100)
    a, b = models["logreg"], models["forest"]
    batchscore.run(spec(tmp_path, a, mode="overwrite", batch_size=64))
    runs_of = {"logreg": set(), "forest": set()}
    outcomes = {"old": 0, "new": 0, "journal": 0}
    for trial in range(trials):
        model = [a, b][trial % 2]
        sig = [signal.SIGKILL, signal.SIGTERM][rng.random() < 0.5]
        proc = run_and_kill(tmp_path, model, delay=rng.uniform(0.2, 1.6), sig=sig, mode="overwrite")
        _, stderr = proc.communicate(timeout=60)
        if sig == signal.SIGTERM:
            # finished first, stopped cleanly, or killed while Python was still starting (nothing opened yet)
            assert proc.returncode in (0, 143, -signal.SIGTERM), stderr
            assert "Traceback" not in stderr
        out = tmp_path / "out"
        if (out / WORK / JOURNAL).exists():
            outcomes["journal"] += 1
            assert all(len(ids) == 400 for ids in visible(out).values())
        else:
            manifest = json.loads((out / "_batchscore.json").read_text())
            assert (out / "_SUCCESS").exists() and manifest["complete"]
            assert sorted(visible(out)) == sorted(f for p in manifest["parts"] for f in p["files"])
            outcomes["new" if proc.returncode == 0 else "old"] += 1
        # the next run (any mode) finishes what was left
        follow = spec(tmp_path, model, mode=["resume", "overwrite"][trial % 2], batch_size=64)
        try:
            report = batchscore.run(follow)
        except OutputExistsError:  # resume with the other model: refused, the commit was finished first
            report = None
        assert not (out / WORK / JOURNAL).exists() and not (out / "_batchscore.lock").exists()
        if report is not None:
            runs_of[Path(model).stem].add(report.run_id)
    assert outcomes["old"] + outcomes["new"] + outcomes["journal"] == trials


def test_a_second_signal_ends_the_run_at_once(models, tmp_path):
    write_files(tmp_path / "in", [make_table(3000, seed=i, start_id=i * 3000) for i in range(8)], row_group_size=200)
    command = [
        sys.executable,
        "-m",
        "batchscore",
        "score",
        tmp_path / "in",
        "-m",
        models["mlp"],
        "-o",
        tmp_path / "out",
    ]
    command += ["--keep", ",".join(KEEP), "--batch-size", "8", "-q"]
    proc = subprocess.Popen(
        list(map(str, command)), stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list((tmp_path / "out").glob("_batchscore/*/*.staged")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert not list((tmp_path / "out").glob("**/*.parquet"))  # nothing published
    batchscore.run(spec(tmp_path, models["mlp"], batch_size=4096))  # the next run clears what was left
    assert len(visible(tmp_path / "out")) == 8 and not (tmp_path / "out" / WORK).exists()


# -- right numbers or an error --------------------------------------------------------------------


def doubling_model(path: Path) -> Path:
    """A regressor that returns 2N rows for N: Concat(x, x) on the batch axis, then a row sum."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, N_FEATURES])
    y = helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 1])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [
        helper.make_node("Concat", ["x", "x"], ["xx"], axis=0),
        helper.make_node("ReduceSum", ["xx", "axes"], ["variable"], keepdims=1),
    ]
    graph = helper.make_graph(nodes, "doubling", [x], [y], initializer=[axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def test_a_model_returning_more_rows_than_it_was_fed_is_refused(tmp_path):
    write_files(tmp_path / "in", [make_table(40_000)], row_group_size=40_000)  # several onnxruntime calls a batch
    model = doubling_model(tmp_path / "doubling.onnx")
    with pytest.raises(ModelError, match=r"output 'variable' has 32768 rows for a call of 16384 rows"):
        batchscore.run(spec(tmp_path, model, features=tuple(FEATURES)))
    assert not list((tmp_path / "out").glob("**/*.parquet"))


def test_a_float_too_large_for_float32_is_an_error_not_infinity(models, tmp_path):
    table = make_table(50)
    values = table["f2"].to_numpy().copy()
    values[[3, 7]] = [1e300, -1e300]
    table = table.set_column(table.schema.get_field_index("f2"), "f2", pa.array(values))
    write_files(tmp_path / "in", [table])
    result = cli("score", tmp_path / "in", "-m", models["logreg"], "-o", tmp_path / "out", "--keep", ",".join(KEEP))
    assert result.returncode == 3, result.stderr
    assert "column 'f2' has 2 value(s) too large for model input 'X' (float32" in result.stderr
    assert "RuntimeWarning" not in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_flipped_byte_in_a_checksummed_page_is_an_error(models, tmp_path):
    (tmp_path / "in").mkdir()
    path = tmp_path / "in" / "part-0.parquet"
    pq.write_table(make_table(2000), path, write_page_checksum=True, compression="none")
    data = bytearray(path.read_bytes())
    meta = pq.read_metadata(path)
    column = meta.row_group(0).column(meta.schema.names.index("f3"))
    data[column.data_page_offset + 200] ^= 0xFF  # inside the page's values, not its header
    path.write_bytes(bytes(data))
    with pytest.raises(batchscore.InputDataError, match=r"part-0\.parquet.*(?i:crc|checksum)"):
        batchscore.run(spec(tmp_path, models["logreg"]))


def test_output_pages_carry_checksums(models, dataset, tmp_path):
    dataset(files=1, rows=100)
    report = batchscore.run(spec(tmp_path, models["logreg"]))
    data = bytearray(Path(report.parts[0]).read_bytes())
    meta = pq.read_metadata(report.parts[0])
    column = meta.row_group(0).column(0)
    data[column.data_page_offset + column.total_compressed_size - 3] ^= 0xFF
    with pytest.raises(OSError, match=r"(?i)crc|checksum"):
        pq.ParquetFile(pa.BufferReader(bytes(data)), page_checksum_verification=True).read()


# -- resume that notices change ---------------------------------------------------------------------


def test_resume_rescores_an_input_rewritten_with_the_same_size_and_mtime(models, tmp_path):
    path = write_files(tmp_path / "in", [make_table(100, seed=1)])[0]
    pq.write_table(make_table(100, seed=1), path, compression="none", use_dictionary=False)
    batchscore.run(spec(tmp_path, models["logreg"], mode="resume"))
    stat = path.stat()
    pq.write_table(make_table(100, seed=2), path, compression="none", use_dictionary=False)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    report = batchscore.run(spec(tmp_path, models["logreg"], mode="resume"))
    assert (report.rows_written, report.parts_skipped) == (100, 0)
    fresh = batchscore.run(spec(tmp_path, models["logreg"], out="fresh"))
    resumed, clean = (pq.read_table(p).replace_schema_metadata(None) for p in (report.parts[0], fresh.parts[0]))
    assert resumed.equals(clean)


def test_resume_rescores_a_truncated_part(models, dataset, tmp_path):
    dataset(files=2, rows=100)
    batchscore.run(spec(tmp_path, models["logreg"], mode="resume"))
    part = tmp_path / "out" / "part-00001.parquet"
    part.write_bytes(part.read_bytes()[:-100])
    report = batchscore.run(spec(tmp_path, models["logreg"], mode="resume"))
    assert (report.rows_written, report.parts_skipped) == (100, 1)
    assert pq.read_table(part).num_rows == 100


def test_resume_from_another_working_folder_keeps_every_part(models, dataset, tmp_path, monkeypatch):
    dataset(files=3, rows=50)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    relative = batchscore.JobSpec(inputs=("in",), model=str(models["logreg"]), out="out", keep=KEEP, mode="resume")
    batchscore.run(relative)
    monkeypatch.chdir(tmp_path / "elsewhere")
    again = batchscore.run(relative.replace(inputs=("../in",), out="../out"))
    assert (again.rows_written, again.parts_skipped) == (0, 3)


def test_resume_over_many_small_files_writes_each_record_once(models, tmp_path, monkeypatch):
    write_files(tmp_path / "in", [make_table(5, seed=i, start_id=i * 5) for i in range(60)])
    calls = inject(monkeypatch, at=0, error=Crash(), only=("write_bytes",))
    batchscore.run(spec(tmp_path, models["logreg"], mode="resume"))
    # one record per part; the run record, the two summary files, the manifest, _SUCCESS, the journal: linear
    assert len(calls) == 60 + 6


# -- pinned feature order -----------------------------------------------------------------------


def test_a_column_swap_upstream_stops_a_nightly_job(models, tmp_path):
    nightly = tmp_path / "data"
    write_files(nightly / "ds=2026-11-19", [make_table(100, seed=1)])
    swapped = make_table(100, seed=2)
    order = ["id", "segment", "f0", "f2", "f1", "f3", "f4", "f5"]  # f1 and f2 swapped upstream
    write_files(nightly / "ds=2026-11-20", [swapped.select(order)])
    shutil.copy(models["logreg"], tmp_path / "m.onnx")
    job = tmp_path / "nightly.toml"
    job.write_text(
        '[model]\npath = "m.onnx"\n[input]\npaths = "data/ds={ds}"\nkeep = ["id", "segment"]\n'
        '[output]\npath = "scores/ds={ds}"\n'
    )
    first = cli("run", job, "--ds", "2026-11-19")
    assert first.returncode == 0, first.stderr
    assert "takes every numeric column in file order: f0, f1, f2, f3, f4, f5" in first.stderr
    second = cli("run", job, "--ds", "2026-11-20")
    assert second.returncode == 3, second.stderr
    line = second.stderr.strip().splitlines()[-1]
    assert "then [f0, f1, f2, f3, f4, f5], now [f0, f2, f1, f3, f4, f5]" in line and "input.features" in line
    assert not (tmp_path / "scores" / "ds=2026-11-20").exists()
    # pinned, the same night scores by name
    pin = 'keep = ["id", "segment"]\nfeatures = ["f0", "f1", "f2", "f3", "f4", "f5"]'
    job.write_text(job.read_text().replace('keep = ["id", "segment"]', pin))
    pinned = cli("run", job, "--ds", "2026-11-20")
    assert pinned.returncode == 0, pinned.stderr


def test_a_model_that_stores_its_feature_names_binds_by_name(models, tmp_path):
    model = onnx.load(str(models["logreg"]))
    onnx.helper.set_model_props(model, {"feature_names": json.dumps(FEATURES)})
    onnx.save(model, str(tmp_path / "named.onnx"))
    table = make_table(80)
    write_files(tmp_path / "in", [table.select(["f5", "id", "f1", "segment", "f0", "f4", "f3", "f2"])])
    named = batchscore.run(spec(tmp_path, tmp_path / "named.onnx"))
    write_files(tmp_path / "in", [table])
    plain = batchscore.run(spec(tmp_path, models["logreg"], out="plain", features=tuple(FEATURES)))
    got, want = pq.read_table(named.parts[0]), pq.read_table(plain.parts[0])
    assert got.column("prediction").equals(want.column("prediction"))
    assert np.allclose(got.column("prob_2").to_numpy(), want.column("prob_2").to_numpy())


def test_overwrite_errors_are_one_line_exit_5(models, dataset, tmp_path):
    dataset(files=1, rows=20)
    write_files(tmp_path / "out", [make_table(3)])
    args = ["-o", tmp_path / "out", "--mode", "overwrite", "--keep", ",".join(KEEP), "--features", ",".join(FEATURES)]
    result = cli("score", tmp_path / "in", "-m", models["logreg"], *args, "-q")
    assert result.returncode == 5 and result.stderr.count("\n") == 1, result.stderr
    assert "no batchscore manifest there lists (e.g. part-0.parquet)" in result.stderr


# -- output errors that used to be tracebacks ------------------------------------------------------


@pytest.mark.parametrize("case", ["manifest_entry", "lock_is_a_folder", "read_only", "partitions"])
def test_output_problems_are_one_line_errors(models, tmp_path, case, request):
    write_files(tmp_path / "in", [make_table(1200)])
    out = tmp_path / "out"
    args = ["score", tmp_path / "in", "-m", models["logreg"], "-o", out, "--keep", "id,segment", "-q"]
    args += ["--features", ",".join(FEATURES)]
    if case == "manifest_entry":
        batchscore.run(spec(tmp_path, models["logreg"]))
        data = json.loads((out / "_batchscore.json").read_text())
        data["parts"][0]["files"] = 7
        (out / "_batchscore.json").write_text(json.dumps(data))
        args += ["--mode", "resume"]
        needle, code = "part entry 0 has no list of file names", 5
    elif case == "lock_is_a_folder":
        (out / "_batchscore.lock").mkdir(parents=True)
        needle, code = "cannot take the lock", 5
    elif case == "read_only":
        out.mkdir()
        out.chmod(0o555)
        if os.geteuid() == 0:  # root writes into mode-555 folders; the immutable attribute stops even root
            if subprocess.run(["chattr", "+i", str(out)], capture_output=True).returncode:
                pytest.skip("running as root and chattr +i is not permitted here: cannot make a read-only folder")
            request.addfinalizer(lambda: subprocess.run(["chattr", "-i", str(out)]))
        needle, code = "is not writable", 5
    else:
        big = make_table(3000).append_column("bucket", pa.array(np.arange(3000) % 1100))
        write_files(tmp_path / "in", [big], row_group_size=3000)  # pyarrow counts folders per batch
        args[args.index("id,segment")] = "id,segment,bucket"
        args += ["--partition-by", "bucket"]
        needle, code = "would be split into 1100 hive folders by partition_by bucket, more than the 1024", 5
    result = cli(*args)
    assert result.returncode == code, result.stderr
    assert needle in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_a_signal_during_start_up_exits_143_without_a_traceback(models, dataset, tmp_path):
    dataset(files=1, rows=10)
    failures = []
    for delay in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4):
        command = [sys.executable, "-m", "batchscore", "score", tmp_path / "in", "-m", models["logreg"]]
        command += ["-o", tmp_path / f"out-{delay}", "--keep", "id,segment", "-q"]
        proc = subprocess.Popen(
            list(map(str, command)), stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        if proc.returncode not in (0, 143, -signal.SIGTERM) or "Traceback" in stderr:
            failures.append((delay, proc.returncode, stderr[-300:]))
    assert not failures
