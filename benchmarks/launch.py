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
RESULT_JSON as ``{"returncode", "wall_s", "maxrss_kb", "timed_out"}``.
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
    while True:
        try:
            _, status, usage = os.wait4(proc.pid, 0)
            break
        except InterruptedError:
            continue
    wall = time.perf_counter() - t0
    timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    with open(result_path, "w") as fh:
        json.dump(
            {
                "returncode": proc.returncode,
                "wall_s": wall,
                "maxrss_kb": usage.ru_maxrss,
                "timed_out": timed_out.is_set(),
            },
            fh,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
