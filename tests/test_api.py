"""The public surface is small and deliberate."""

from __future__ import annotations

import pickle

import pytest

import batchscore
from batchscore import errors


def test_public_api_is_exactly_this():
    assert batchscore.__all__ == [
        "BatchScoreError",
        "DeviceUnavailableError",
        "DriftError",  # drift over the limits with on_drift="fail" (issue 11)
        "EngineError",  # a worker or the Ray cluster failed (issue 10)
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
        "score",  # the Python API on frames (issue 5)
    ]
    assert batchscore.__all__ == sorted(batchscore.__all__)


@pytest.mark.parametrize("name", errors.__all__)
def test_errors_pickle_with_their_message_and_exit_code(name):
    cls = getattr(errors, name)
    err = cls("column 'x' is missing in a.parquet; pass --features")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls
    assert str(back) == str(err)
    assert back.exit_code == err.exit_code


@pytest.mark.parametrize(
    ("cls", "code"),
    [
        (errors.JobSpecError, 2),
        (errors.InputDataError, 3),
        (errors.SchemaMismatchError, 3),
        (errors.NullValuesError, 3),
        (errors.ModelError, 4),
        (errors.DeviceUnavailableError, 4),
        (errors.OutputError, 5),
        (errors.OutputExistsError, 5),
        (errors.OutputLockedError, 5),
        (errors.EngineError, 7),
    ],
)
def test_exit_codes(cls, code):
    assert cls.exit_code == code
    assert issubclass(cls, errors.BatchScoreError)


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"inputs": ()}, "no input given"),
        ({"batch_size": -1}, "batch_size must be a positive"),
        ({"threads": 0}, "threads must be at least 1"),
        ({"on_null": "drop"}, "on_null must be one of error|fill|skip"),
        ({"features": ("a", "a")}, "features names 'a' more than once"),
        ({"keep": ("a", "")}, "keep has an empty column name"),
        ({"prob_format": "dict"}, "prob_format must be one of columns|list"),
        ({"mode": "append"}, "mode must be one of error|overwrite|resume"),  # resume is the third mode
        ({"compression": "lzo"}, "compression must be one of zstd|"),  # pyarrow cannot write lzo
        ({"model_sha256": "abc"}, "64 hex digits"),  # a truncated pin is a typo, not a pin
        ({"partition_by": ("region", "region")}, "partition_by names 'region' more than once"),
        ({"filter": "region = "}, "not a SQL expression"),  # bad SQL fails at spec time, not mid-run
        ({"filter": "1 = 1"}, "names no column"),
        ({"threshold": 1.5}, "threshold must be a probability between 0 and 1"),
        ({"features": ("a",), "input_columns": {"X": "a"}}, "features and input_columns are both given"),
        ({"input_columns": {"X": ["a", ""]}}, r"input_columns\['X'\] = \['a', ''\] is not a list of column names"),
        ({"output_columns": {"a": "p", "b": "p"}}, r"output_columns names column\(s\) 'p' more than once"),
    ],
)
def test_spec_validation_names_the_field(changes, needle):
    base = {"inputs": ("in",), "model": "m.onnx", "out": "out"}
    with pytest.raises(errors.JobSpecError, match=needle):
        batchscore.JobSpec(**{**base, **changes})
