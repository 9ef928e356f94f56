"""Tiny stdlib-only launcher: run one command and record its wall time and peak RSS.

Usage (from ``bench.py``)::

    python -S benchmarks/launch.py RESULT_JSON TIMEOUT_S -- CMD [ARGS...]

Why a launcher at all: on Linux a process's ``ru_maxrss`` starts from the
high-water mark of the address space it replaced at ``exec`` time, i.e. the
RSS of whoever forked it.  When the benchmark parent has grown to hundreds of
MB (generated data, scikit-learn, pytest ...), every child it spawns directly
would report at least that much.  This launcher is a fresh, small interpreter,
so the command it forks inherits only a few MB, and ``os.wait4`` gives the
command's own peak RSS (including any children it reaped) exactly.

The command inherits this process's stdout/stderr; the measurement goes to
RESULT_JSON as ``{"returncode", "wall_s", "maxrss_kb", "tree_peak_kb", "timed_out"}``.

``maxrss_kb`` is the largest single process; ``tree_peak_kb`` is the peak of the
memory of all the command's processes together (worker processes, a Ray
cluster's daemons and actors), sampled every 0.2 s: the sum of their PSS, which
counts shared pages (the libraries, Ray's object store) once, or of their RSS
where PSS cannot be read. Linux only (0 elsewhere).
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time


def main(argv: list[str]) -> int:
    """Run ``argv[3:]`` (after ``--``) and write the measurement to ``argv[0]``."""
    if len(argv) < 4 or argv[2] != "--":
        print("usage: launch.py RESULT_JSON TIMEOUT_S -- CMD [ARGS...]", file=sys.stderr)
        return 2
    result_path, timeout_s, cmd = argv[0], float(argv[1]), argv[3:]
    timed_out = threading.Event()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True)

    def _kill() -> None:
        timed_out.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(timeout_s, _kill)
    timer.daemon = True
    timer.start()
    peak = [0]
    done = threading.Event()
    sampler = threading.Thread(target=_sample_tree, args=(proc.pid, peak, done), daemon=True)
    sampler.start()
    while True:
        try:
            _, status, usage = os.wait4(proc.pid, 0)
            break
        except InterruptedError:
            continue
    wall = time.perf_counter() - t0
    timer.cancel()
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    with open(result_path, "w") as fh:
        json.dump(
            {
                "returncode": proc.returncode,
                "wall_s": wall,
                "maxrss_kb": usage.ru_maxrss,
                "tree_peak_kb": max(peak[0], usage.ru_maxrss),
                "timed_out": timed_out.is_set(),
            },
            fh,
        )
    return 0


def _sample_tree(root: int, peak: list[int], done: threading.Event) -> None:
    """Record in ``peak[0]`` the highest total memory (KiB) of ``root``, its descendants and its session."""
    while not done.wait(0.2):
        try:
            parents: dict[int, int] = {}
            sessions: dict[int, int] = {}
            for name in os.listdir("/proc"):
                if name.isdigit():
                    with contextlib.suppress(OSError, IndexError, ValueError):
                        with open(f"/proc/{name}/stat") as fh:
                            fields = fh.read().rsplit(")", 1)[1].split()
                        parents[int(name)] = int(fields[1])
                        sessions[int(name)] = int(fields[3])
        except OSError:
            return  # no /proc: not Linux
        tree = {root}
        grew = True
        while grew:
            grew = False
            for pid, parent in parents.items():
                if parent in tree and pid not in tree:
                    tree.add(pid)
                    grew = True
        tree |= {pid for pid, sid in sessions.items() if sid == root}
        total = sum(_memory_kb(pid) for pid in tree)
        peak[0] = max(peak[0], total)


def _memory_kb(pid: int) -> int:
    """PSS of a process in KiB, or its RSS when smaps_rollup cannot be read; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
