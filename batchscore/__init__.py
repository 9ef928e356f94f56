"""batchscore: score Parquet files with ONNX models, fast, atomically, on CPU or GPU.

The public API is what ``__all__`` lists; everything else is private.
"""

from __future__ import annotations

from batchscore._version import __version__
from batchscore.errors import (
    BatchScoreError,
    DeviceUnavailableError,
    DriftError,
    EngineError,
    InputDataError,
    JobSpecError,
    ModelError,
    NullValuesError,
    OutputError,
    OutputExistsError,
    OutputLockedError,
    SchemaMismatchError,
)
from batchscore.frames import score
from batchscore.jobfile import load_job
from batchscore.model import Model
from batchscore.pipeline import run
from batchscore.report import Progress, RunReport
from batchscore.spec import JobSpec

__all__ = [
    "BatchScoreError",
    "DeviceUnavailableError",
    "DriftError",
    "EngineError",
    "InputDataError",
    "JobSpec",
    "JobSpecError",
    "Model",
    "ModelError",
    "NullValuesError",
    "OutputError",
    "OutputExistsError",
    "OutputLockedError",
    "Progress",
    "RunReport",
    "SchemaMismatchError",
    "__version__",
    "load_job",
    "run",
    "score",
]
