"""The error tree. The CLI catches :class:`BatchScoreError` and exits with its code.

::

    BatchScoreError                 exit 1 (never raised directly)
    +-- JobSpecError                exit 2  bad option, flag or job file
    +-- InputDataError              exit 3  input missing or unreadable
    |   +-- SchemaMismatchError     exit 3  the data does not fit the model
    |   +-- NullValuesError         exit 3  nulls in a feature with on_null=error
    +-- ModelError                  exit 4  model unreadable or unsupported
    |   +-- DeviceUnavailableError  exit 4  the requested device cannot be used
    +-- OutputError                 exit 5  output cannot be written
    |   +-- OutputExistsError       exit 5  output exists and mode=error, or cannot be resumed
    |   +-- OutputLockedError       exit 5  another live run is writing the same output
    +-- DriftError                  exit 6  the data drifted from the reference beyond the limits and
                                            on_drift is 'fail'; the output IS committed
    +-- EngineError                 exit 7  a worker process died, or the Ray cluster is unreachable or lost

Every message is one line: where (file, column, model input), what was expected,
what was found, and the fix. Errors take a single message argument so that they
pickle (worker processes and Ray actors send them back to the driver, which
raises the same class with the same message).
"""

from __future__ import annotations

__all__ = [
    "BatchScoreError",
    "DeviceUnavailableError",
    "DriftError",
    "EngineError",
    "InputDataError",
    "JobSpecError",
    "ModelError",
    "NullValuesError",
    "OutputError",
    "OutputExistsError",
    "OutputLockedError",
    "SchemaMismatchError",
]


class BatchScoreError(Exception):
    """Base of every error batchscore raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class JobSpecError(BatchScoreError):
    """A bad option, flag or job file."""

    exit_code = 2


class InputDataError(BatchScoreError):
    """An input path is missing or a file is not readable Parquet."""

    exit_code = 3


class SchemaMismatchError(InputDataError):
    """The data's columns or types do not fit the model's inputs."""


class NullValuesError(InputDataError):
    """A feature column holds nulls and on_null is 'error'."""


class ModelError(BatchScoreError):
    """The model cannot be loaded, or its inputs or outputs are unsupported."""

    exit_code = 4


class DeviceUnavailableError(ModelError):
    """The requested execution device is not usable on this machine."""


class OutputError(BatchScoreError):
    """The output folder cannot be written."""

    exit_code = 5


class OutputExistsError(OutputError):
    """The output folder already holds output and mode is 'error'."""


class OutputLockedError(OutputError):
    """Another live run holds the output folder's lock."""


class DriftError(BatchScoreError):
    """The run's data drifted from the reference beyond the limits, with on_drift 'fail'.

    Raised after the commit: the scores and the summary are in place, the exit code (6) tells a
    scheduler to stop the downstream tasks until a person has looked.
    """

    exit_code = 6


class EngineError(BatchScoreError):
    """The engine running the tasks failed: a worker died, or the Ray cluster cannot be reached or was lost."""

    exit_code = 7
