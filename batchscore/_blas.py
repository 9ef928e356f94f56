"""Imported by the command line before numpy: numpy's OpenBLAS gets one thread.

batchscore makes no BLAS call (onnxruntime brings its own thread pool), but on
import OpenBLAS starts a thread per core that spins for a while: measured on
2 cores, 0.12 s of CPU taken from a 0.45 s run of a 10-row file, and from the
reader's threads on large ones. A value the user set is kept. The Python API
leaves it alone: a program importing batchscore may want BLAS for its own work.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
