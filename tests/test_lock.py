"""One run per output folder: a live owner blocks the second run at once; a dead one's lock is taken over."""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import sys

import pytest

import batchscore
from batchscore.errors import OutputLockedError
from batchscore.lock import LOCK, OutputLock


def spec(tmp_path, model, **changes):
    base = batchscore.JobSpec(inputs=(str(tmp_path / "in"),), model=str(model), out=str(tmp_path / "out"), keep=("id",))
    return base.replace(**changes)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("mode", ["error", "overwrite", "resume"])
def test_second_run_fails_fast_naming_the_owner(models, dataset, tmp_path, mode):
    dataset(files=1, rows=20)
    (tmp_path / "out").mkdir()
    with OutputLock(str(tmp_path / "out"), run_id="nightly-1"):  # a live run in this very process
        with pytest.raises(OutputLockedError) as info:
            batchscore.run(spec(tmp_path, models["logreg"], mode=mode))
        assert (tmp_path / "out" / LOCK).exists()  # the loser leaves the owner's lock alone
    message = str(info.value)
    assert f"pid {__import__('os').getpid()} on {platform.node()}, run nightly-1" in message
    assert "wait for it to finish" in message
    assert info.value.exit_code == 5
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []  # nothing written, lock released


def test_stale_lock_and_staging_of_a_dead_run_are_taken_over(models, dataset, tmp_path, caplog):
    dataset(files=1, rows=20)
    out = tmp_path / "out"
    (out / "_staging-20261120T000000Z-dead").mkdir(parents=True)
    (out / "_staging-20261120T000000Z-dead" / "part-00000.parquet").write_bytes(b"half a part")
    owner = {"pid": dead_pid(), "host": platform.node(), "run_id": "dead", "since": "2026-11-20T00:00:00+00:00"}
    (out / LOCK).write_text(json.dumps(owner))
    caplog.set_level(logging.INFO, logger="batchscore")
    batchscore.run(spec(tmp_path, models["logreg"]))
    assert f"took over the lock of a run that is gone (pid {owner['pid']}" in caplog.text
    assert sorted(p.name for p in out.iterdir()) == [
        "_SUCCESS",
        "_batchscore.json",
        "_batchscore_summary.json",  # issue 11
        "_batchscore_summary_parts.json",
        "part-00000.parquet",
    ]


def test_lock_is_released_on_failure(models, dataset, tmp_path):
    dataset(files=2, rows=20)
    batchscore.run(spec(tmp_path, models["logreg"]))
    with pytest.raises(batchscore.OutputExistsError):  # refused under the lock
        batchscore.run(spec(tmp_path, models["logreg"]))
    with pytest.raises(batchscore.SchemaMismatchError, match="cannot be evaluated"):  # failed mid-run
        batchscore.run(spec(tmp_path, models["logreg"], mode="overwrite", filter="CAST(segment AS INTEGER) > 1"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "_SUCCESS",
        "_batchscore.json",
        "_batchscore_summary.json",  # issue 11
        "_batchscore_summary_parts.json",
        "part-00000.parquet",
        "part-00001.parquet",
    ]
