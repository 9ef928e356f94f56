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
        # wrong types from Python callers: a JobSpecError (exit 2), never a TypeError from a comparison
        ({"batch_size": "100"}, r"batch_size must be an integer, got str '100'; write it without quotes"),
        ({"batch_size": True}, r"batch_size must be an integer, got bool True"),
        ({"batch_size": 100_000_000_000}, r"batch_size must be a positive number of rows up to 16,777,216"),
        ({"threads": "4"}, r"threads must be an integer, got str '4'"),
        ({"fill_value": "nan"}, r"fill_value must be a number, got str 'nan'"),
        ({"threshold": "0.5"}, r"threshold must be a number, got str '0.5'"),
        ({"with_score": "yes"}, r"with_score must be true or false, got str 'yes'"),
        ({"keep": ("id", 3)}, r"keep must be a list of strings, got tuple \('id', 3\)"),
        ({"model": 3}, r"model must be a string, got int 3"),
        ({"device": "tpu"}, r"device must be one of auto\|cpu\|cuda, got 'tpu'"),
        ({"output_columns": ["prediction"]}, r"output_columns must be a mapping of names"),
        ({"max_psi": "0.2"}, r"max_psi must be a number, got str '0.2'"),
        ({"summary": "no"}, r"summary must be true or false, got str 'no'"),
    ],
)
def test_spec_validation_names_the_field(changes, needle):
    base = {"inputs": ("in",), "model": "m.onnx", "out": "out"}
    with pytest.raises(errors.JobSpecError, match=needle):
        batchscore.JobSpec(**{**base, **changes})


def test_import_is_light_and_every_name_resolves():
    """``import batchscore`` loads no numpy, pyarrow or onnxruntime; each public name is there on first use."""
    import subprocess
    import sys

    code = (
        "import sys, batchscore\n"
        "heavy = [m for m in ('numpy', 'pyarrow', 'onnxruntime', 'onnx', 'polars', 'pandas') if m in sys.modules]\n"
        "print(heavy)\n"
        "print(all(getattr(batchscore, n) is not None for n in batchscore.__all__))\n"
        "from batchscore import *  # noqa: F403\n"
        "print(sorted(set(batchscore.__all__) - set(dir(batchscore))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:3] == ["[]", "True", "[]"]
    assert batchscore.run is batchscore.pipeline.run and batchscore.Model is batchscore.model.Model
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        batchscore.nothing_here  # noqa: B018


def test_spec_takes_paths_and_lists_as_python_callers_write_them(tmp_path):
    spec = batchscore.JobSpec(inputs=tmp_path / "in", model=tmp_path / "m.onnx", out=tmp_path / "out", keep=["id"])
    assert spec.inputs == (str(tmp_path / "in"),) and spec.model == str(tmp_path / "m.onnx")
    assert spec.out == str(tmp_path / "out") and spec.keep == ("id",)
    assert batchscore.JobSpec(inputs=("a",), model="m", out="o", fill_value=0).fill_value == 0.0
