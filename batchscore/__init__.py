"""batchscore: score Parquet files with ONNX models, fast, atomically, on CPU or GPU.

The public API is what ``__all__`` lists; everything else is private.

``import batchscore`` is cheap: the errors are defined here, and the rest
(numpy, pyarrow, onnxruntime behind it) is imported on first use of a name
(PEP 562), so ``batchscore --help`` and scripts that only catch the errors do
not pay for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from batchscore.frames import score
    from batchscore.jobfile import load_job
    from batchscore.model import Model
    from batchscore.pipeline import run
    from batchscore.report import Progress, RunReport
    from batchscore.spec import JobSpec

_LAZY = {
    "JobSpec": "batchscore.spec",
    "Model": "batchscore.model",
    "Progress": "batchscore.report",
    "RunReport": "batchscore.report",
    "load_job": "batchscore.jobfile",
    "run": "batchscore.pipeline",
    "score": "batchscore.frames",
}
"""Public names imported on first use, and the module each comes from."""

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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        msg = f"module 'batchscore' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
