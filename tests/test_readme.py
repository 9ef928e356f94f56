"""Docs are tests: every command and Python block in README.md runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
from conftest import ROOT, assert_same_output

README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent


def console_commands() -> list[str]:
    blocks = re.findall(r"```console\n(.*?)```", README, flags=re.S)
    return [
        line[2:].split("  #")[0].strip() for block in blocks for line in block.splitlines() if line.startswith("$ ")
    ]


def test_readme_shows_the_two_setup_commands():
    commands = console_commands()
    assert "make demo" in commands and "make test" in commands


def test_every_readme_command_runs(sandbox):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    ran = 0
    for command in console_commands():
        if command == "make test":
            continue  # this very suite
        result = subprocess.run(command, shell=True, cwd=sandbox, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        assert "Traceback" not in result.stderr
        ran += 1
    assert ran >= 4
    parts = sorted((sandbox / "out" / "demo").glob("*.parquet"))
    assert len(parts) == 4 and (sandbox / "out" / "demo" / "_SUCCESS").exists()
    assert sum(pq.read_metadata(p).num_rows for p in parts) == 200_000
    columns = pq.read_table(sandbox / "out" / "demo-columns")  # the multi-input model, --input
    assert columns.column_names == ["application_id", "ds", "prediction", "prob_bad", "prob_good"]
    decisions = pq.read_table(sandbox / "out" / "demo-decisions")  # --threshold, --with-score, --output
    assert decisions.column_names == ["application_id", "decision", "p_bad", "confidence"]
    assert set(decisions["decision"].to_pylist()) == {"bad", "good"}
    for engine in ("processes", "ray"):  # scale out: the local engine's output, part for part
        assert_same_output(sandbox / "out" / f"demo-{engine}", sandbox / "out" / "demo")


def test_readme_python_blocks_run(sandbox, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks
    monkeypatch.chdir(sandbox)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    assert (sandbox / "out" / "demo-api" / "_SUCCESS").exists()


def test_readme_object_storage_command_runs_against_a_local_s3_server(s3_server, tmp_path):
    """The `batchscore score s3://...` and `batchscore report s3://...` lines of README.md, pointed at moto
    instead of 127.0.0.1:9000."""
    import pyarrow.fs as pafs

    lines = [line for block in re.findall(r"```sh\n(.*?)```", README, flags=re.S) for line in block.splitlines()]
    (command,) = [line for line in lines if line.startswith("batchscore score s3://")]
    (show,) = [line for line in lines if line.startswith("batchscore report s3://")]
    fs = pafs.S3FileSystem(
        endpoint_override=s3_server.host_port, scheme="http", region="us-east-1", allow_bucket_creation=True
    )
    for bucket in ("lake", "models"):
        if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            fs.create_dir(bucket)
    day = ROOT / "data" / "demo" / "ds=2026-11-20"
    for path in day.glob("*.parquet"):
        with fs.open_output_stream(f"lake/events/ds=2026-11-20/{path.name}") as out:
            out.write(path.read_bytes())
    with fs.open_output_stream("models/model.onnx") as out:
        out.write((ROOT / "data" / "demo" / "model.onnx").read_bytes())
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    command = command.replace("127.0.0.1:9000", s3_server.host_port) + " --mode overwrite"
    result = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    found = fs.get_file_info(pafs.FileSelector("lake/scores/ds=2026-11-20"))
    names = {f.base_name for f in found}
    assert {"_SUCCESS", "_batchscore.json", "part-00000.parquet"} <= names and "_batchscore.lock" not in names
    assert fs.get_file_info("lake/reports/2026-11-20.json").type == pafs.FileType.File
    show = show.replace("127.0.0.1:9000", s3_server.host_port)
    result = subprocess.run(show, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{show}\n{result.stdout}\n{result.stderr}"
    assert result.stdout.startswith("summary of s3://lake/scores/ds=2026-11-20/_batchscore_summary.json")


def test_readme_delta_commands_run_against_a_local_s3_server(s3_server, tmp_path):
    """The Delta Lake section's `--format delta --out s3://...` and `inspect s3://...` lines, against moto."""
    import pyarrow.fs as pafs

    commands = [
        line.strip() for block in re.findall(r"```sh\n(.*?)```", README, flags=re.S) for line in block.splitlines()
        if line.strip().startswith("batchscore ") and "scores_delta" in line
    ]  # fmt: skip
    assert [c.split()[1] for c in commands] == ["score", "inspect"]
    fs = pafs.S3FileSystem(
        endpoint_override=s3_server.host_port, scheme="http", region="us-east-1", allow_bucket_creation=True
    )
    for bucket in ("lake", "models"):
        if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            fs.create_dir(bucket)
    for path in (ROOT / "data" / "demo" / "ds=2026-11-20").glob("*.parquet"):
        with fs.open_output_stream(f"lake/events/ds=2026-11-20/{path.name}") as out:
            out.write(path.read_bytes())
    with fs.open_output_stream("models/model.onnx") as out:
        out.write((ROOT / "data" / "demo" / "model.onnx").read_bytes())
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    for line in commands:
        command = line.replace("127.0.0.1:9000", s3_server.host_port)
        result = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    assert "ds=2026-11-20" in result.stdout and "  v0  " in result.stdout  # inspect: the night's commit
    assert fs.get_file_info("lake/scores_delta/_delta_log/00000000000000000000.json").type == pafs.FileType.File


def test_license_is_the_apache_2_text_pyproject_declares():
    text = (ROOT / "LICENSE").read_text()
    assert 'license = "Apache-2.0"' in (ROOT / "pyproject.toml").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and len(text.splitlines()) > 200  # the full text, not a stub
