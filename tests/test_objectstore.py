"""Object stores behind the storage seam, against real servers: moto's S3 and a GCS emulator on 127.0.0.1."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from batchscore import _objectlock, _objectstore, storage
from batchscore.errors import JobSpecError, OutputLockedError

# -- options ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"anonymous": "true", "connect_timeout": "2.5"}, {"anonymous": True, "connect_timeout": 2.5}),  # CLI text
        ({"anonymous": False, "load_frequency": 60}, {"anonymous": False, "load_frequency": 60}),  # TOML values
        ({"retry_strategy": "standard:5"}, {"retry_strategy": "standard:5"}),
    ],
)
def test_options_are_pyarrows_names_coerced_to_their_types(options, expected):
    assert _objectstore.check_options(options) == expected


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"endpoint": "x"}, "unknown storage option 'endpoint' (did you mean 'endpoint_override'?)"),
        ({"anonymous": "maybe"}, "storage option 'anonymous' must be true or false, got 'maybe'"),
        ({"secret_key": ["s3cr3t"]}, "storage option 'secret_key' must be a string, got <hidden>"),  # no secret echoed
        ({"retry_strategy": "forever"}, "must be standard or default"),
    ],
)
def test_bad_options_are_usage_errors(options, message):
    with pytest.raises(JobSpecError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        _objectstore.check_options(options)


def test_secrets_are_redacted():
    assert _objectstore.redact({"secret_key": "s", "region": "eu"}) == {"secret_key": "<hidden>", "region": "eu"}


@pytest.mark.parametrize(
    ("uri", "scheme", "path"),
    [
        ("abfs://box@acct.dfs.core.windows.net/a/b", "abfs", "box/a/b"),  # account in the host
        ("az://box/a/b", "az", "box/a/b"),
    ],
)
def test_azure_uris(uri, scheme, path):
    where = storage.resolve(uri, {"account_name": "acct", "account_key": "a2V5"})
    assert (where.scheme, where.path) == (scheme, path)


def test_s3_filesystems_are_built_once_per_options(s3_server):
    one = storage.resolve("s3://bkt-a/x", s3_server.options())
    two = storage.resolve("s3://bkt-b/y/", s3_server.options())
    assert one.fs is two.fs
    assert (two.uri, two.parent.uri, two.child("z").uri) == ("s3://bkt-b/y", "s3://bkt-b", "s3://bkt-b/y/z")
    assert storage.resolve("s3://bkt-a/x", {**s3_server.options(), "region": "eu-west-1"}).fs is not one.fs


# -- the seam on S3 and GCS ------------------------------------------------------------------------


def test_listing_globs_writes_and_moves(remote):
    bucket = remote
    for key in ["d/ds=1/x.parquet", "d/ds=1/_staging/y.parquet", "d/.hidden/w.parquet", "d/z.parquet", "d/n.txt"]:
        bucket.put(key, b"x")
    options = bucket.server.options()
    folder = storage.resolve(bucket.uri("d"), options)
    assert [f.location.relative_to(folder) for f in folder.list_files()] == ["ds=1/x.parquet", "n.txt", "z.parquet"]
    assert [f.location.uri for f in folder.glob("**/*.parquet")] == [
        bucket.uri("d/ds=1/x.parquet"),
        bucket.uri("d/z.parquet"),
    ]
    assert [f.size for f in folder.glob("*.parquet")] == [1]
    target = folder.child("_batchscore.json")
    target.write_bytes(b"{}")
    assert target.read_bytes() == b"{}"
    assert target.read_tail(1, 2) == b"}"
    target.move_to(folder.child("moved.json"))
    assert not target.exists() and folder.child("moved.json").read_bytes() == b"{}"
    folder.child("ds=1").delete_tree()
    assert "ds=1/x.parquet" not in bucket.keys("d")


def test_aws_endpoint_url_is_honoured(s3, monkeypatch):
    s3.put("k", b"v")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.server.endpoint)
    assert storage.resolve(s3.uri("k"), {}).read_bytes() == b"v"


def test_create_new_is_a_conditional_write_on_s3(s3):
    where = storage.resolve(s3.uri("out/_batchscore.lock"), s3.server.options())
    assert where.create_new(b"first")
    assert not where.create_new(b"second")
    assert where.read_bytes() == b"first"


def test_gcs_emulator_does_not_honour_conditional_writes(gcs):
    """Why the lock is tested on S3 only: the GCS emulators ignore ifGenerationMatch=0 (checked here, so a
    future emulator that honours it shows up as a failure of this test, and the GCS lock tests can be enabled)."""
    import urllib.request

    def create() -> int:
        url = f"{gcs.server.endpoint}/upload/storage/v1/b/{gcs.name.split('/')[0]}/o"
        query = f"?uploadType=media&name={gcs.name.split('/', 1)[1]}/lock&ifGenerationMatch=0"
        request = urllib.request.Request(url + query, data=b"x", method="POST")
        try:
            with urllib.request.urlopen(request) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    assert create() == 200
    assert create() == 200  # a real GCS answers 412 Precondition Failed


# -- errors ----------------------------------------------------------------------------------------


def test_missing_bucket_and_unreachable_endpoint_are_one_line(s3_server):
    missing = storage.resolve("s3://no-such-bucket/x", s3_server.options())
    with pytest.raises(OSError) as info:
        missing.child("f").write_bytes(b"x")
    assert storage.describe_os_error(info.value) == (
        "bucket 'no-such-bucket' does not exist; check the bucket name, the endpoint and the region"
    )
    nowhere = storage.resolve("s3://bkt/x", {"endpoint_override": "127.0.0.1:9", "scheme": "http"})
    with pytest.raises(OSError) as info:
        nowhere.info()
    assert storage.describe_os_error(info.value).startswith(
        "cannot reach the storage endpoint; check endpoint_override"
    )


# -- the lock --------------------------------------------------------------------------------------


def lock_at(s3, **kwargs):
    where = storage.resolve(s3.uri("out/_batchscore.lock"), s3.server.options())
    return _objectlock.ObjectStoreLock(where, run_id=kwargs.pop("run_id", "r1"), **kwargs)


def write_owner(s3, **owner):
    now = datetime.now(UTC)
    record = {
        "pid": 4242,
        "host": "worker-3",
        "run_id": "other",
        "since": now.isoformat(),
        "heartbeat": now.isoformat(),
    }
    s3.put("out/_batchscore.lock", json.dumps({**record, **owner}).encode())


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_is_exclusive_names_its_owner_and_is_released(s3):
    first = lock_at(s3, run_id="nightly-1")
    first.acquire()
    owner = first.owner()
    assert (owner["host"], owner["run_id"], owner["expiry_s"]) == (platform.node(), "nightly-1", 120.0)
    assert set(owner) == {"pid", "host", "run_id", "since", "heartbeat", "expiry_s"}
    with pytest.raises(OutputLockedError) as info:
        lock_at(s3, run_id="nightly-2").acquire()
    assert f"is being written by another run (pid {owner['pid']} on {platform.node()}, run nightly-1" in str(info.value)
    assert info.value.exit_code == 5
    first.release()
    assert s3.keys("out") == []
    with lock_at(s3, run_id="nightly-2") as second:
        assert second.owner()["run_id"] == "nightly-2"


def test_heartbeat_refreshes_the_lock(s3):
    with lock_at(s3, expiry_s=2.0, heartbeat_s=0.2) as held:
        first = held.owner()["heartbeat"]
        time.sleep(0.7)
        assert held.owner()["heartbeat"] > first
        assert not held.lost


def test_a_run_whose_lock_was_taken_knows_it_lost_it(s3):
    held = lock_at(s3, expiry_s=2.0, heartbeat_s=0.1)
    held.acquire()
    write_owner(s3, run_id="successor")  # as a run that judged this one dead would
    deadline = time.monotonic() + 5
    while not held.lost and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(OutputLockedError, match=r"lost the lock on output .*another run replaced it"):
        held.check()
    held.release()
    assert json.loads(s3.get("out/_batchscore.lock"))["run_id"] == "successor"  # the successor's lock is left alone


@pytest.mark.parametrize(
    ("owner", "wait", "taken"),
    [
        ({"host": platform.node(), "pid": "dead"}, 0, True),  # same host, no such process: at once
        ({"heartbeat": "old"}, 1.2, True),  # another host, no sign of life for longer than the expiry
        # the store's clock says the object was just written: alive. Its times have 1 s resolution (and are
        # truncated), so the expiry here is well above 1 s: a loaded machine read the lock 1.05 s "old" once
        ({"heartbeat": "old"}, 0, False),
        ({"heartbeat": "ahead"}, 1.2, False),  # fresh by the owner's clock (ahead of ours): the later time wins
        ({"host": platform.node(), "pid": "mine"}, 0, False),  # a live process on this host: alive
    ],
)
def test_stale_locks_are_taken_over(s3, caplog, owner, wait, taken):
    caplog.set_level("INFO", logger="batchscore")
    now = datetime.now(UTC)
    replace = {
        "dead": dead_pid(),
        "mine": os.getpid(),
        "old": (now - timedelta(minutes=5)).isoformat(),
        "ahead": (now + timedelta(seconds=10)).isoformat(),
    }
    write_owner(s3, **{k: replace.get(v, v) if isinstance(v, str) else v for k, v in owner.items()})
    time.sleep(wait)
    lock = lock_at(s3, run_id="mine", expiry_s=1.0 if wait else 5.0)
    if not taken:
        with pytest.raises(OutputLockedError, match="is being written by another run"):
            lock.acquire()
        return
    with lock:
        assert lock.owner()["run_id"] == "mine"
    assert "took over the lock of a run that is gone" in caplog.text


def test_expired_lock_is_taken_over_by_exactly_one_of_two_runs(s3):
    write_owner(s3, heartbeat=(datetime.now(UTC) - timedelta(minutes=5)).isoformat())
    time.sleep(1.2)  # let the store's last-modified time age past the expiry below too
    locks = [lock_at(s3, run_id=f"run-{i}", expiry_s=1.0) for i in range(2)]
    outcomes: list[str] = []

    def take(lock):
        try:
            lock.acquire()
            outcomes.append("won")
        except OutputLockedError:
            outcomes.append("refused")

    threads = [threading.Thread(target=take, args=(lock,)) for lock in locks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["refused", "won"]
    for lock in locks:
        lock.release()


def test_other_schemes_go_through_fsspec():
    pytest.importorskip("fsspec")
    where = storage.resolve("memory://batchscore-test/a/b.json")
    where.write_bytes(b"{}")
    assert where.read_bytes() == b"{}"
    assert [f.location.name for f in where.parent.list_files()] == ["b.json"]
    fresh = where.parent.child("lock")
    assert fresh.create_new(b"1")  # fsspec's exclusive mode ("xb") where the filesystem has one
    assert not fresh.create_new(b"2")


def test_an_unknown_scheme_without_its_package_is_a_usage_error():
    with pytest.raises(JobSpecError, match="no filesystem for nosuchfs://"):
        storage.resolve("nosuchfs://x/y")


def test_signatures_in_urls_never_reach_a_message():
    error = OSError("Error performing PUT https://acct.blob.core.windows.net/c/k?sv=2024&sig=S3CR3T in 2ms - 500")
    assert "S3CR3T" not in _objectstore.scrub(str(error))
    assert "https://acct.blob.core.windows.net/c/k" in _objectstore.scrub(str(error))


def test_output_on_a_store_without_conditional_writes_is_refused():
    pytest.importorskip("fsspec")
    with pytest.raises(OSError, match=r"memory:// offers no conditional write"):
        storage.resolve("memory://batchscore-test/out/_batchscore.lock").open_locked()


def test_obstore_debug_dumps_do_not_mislead():
    error = Exception("Object at location k not found: 404\n\nDebug source:\nRetryError { retry_timeout: 180s }")
    assert _objectstore.explain(error) is None  # not a store-wide problem; no "cannot reach the endpoint"
