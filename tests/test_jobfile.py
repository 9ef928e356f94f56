"""Job files: the same JobSpec as the flags, templated dates, overrides, and errors that name the key and the file."""

from __future__ import annotations

import inspect
import os
from dataclasses import fields
from pathlib import Path

import pytest

from batchscore import JobSpec, JobSpecError, load_job
from batchscore.cli import score
from batchscore.jobfile import KEYS, template_vars

MINIMAL = """
[model]
path = "m.onnx"
[input]
paths = "in"
[output]
path = "out"
"""

FULL = """
[model]
path = "models/m.onnx"
sha256 = "E8CFBD1923185E5CE9B5E0BC2D379F2E0D216696A360650D242D299F70A2B010"
device = "cpu"
threads = 2

[input]
paths = ["data/ds={ds}/*.parquet", "/abs/extra.parquet"]
features = ["f0", "f1"]
keep = ["id", "segment"]
on_null = "fill"
fill_value = 1
filter = "segment = 'a' AND f2 > 0"

[output]
path = "out/ds={ds_nodash}"
mode = "resume"
prob_format = "list"
prediction_col = "label"
compression = "snappy"
partition_by = ["segment"]
report = "reports/{yesterday_ds}.json"
columns = {prediction = "decision", score = "confidence"}
threshold = 0.7
with_score = true
summary = true

[run]
batch_size = 1000

[drift]
reference = "out/ds={yesterday_ds}"
max_psi = 0.2
max_null_rate_change = 0.05
on_drift = "fail"
"""


def job(tmp_path: Path, text: str, name: str = "job.toml") -> str:
    path = tmp_path / "jobs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_minimal_job_gets_the_spec_defaults(tmp_path):
    path = job(tmp_path, MINIMAL)
    spec = load_job(path)
    folder = os.path.dirname(path)
    assert spec == JobSpec(
        inputs=(os.path.join(folder, "in"),),
        model=os.path.join(folder, "m.onnx"),
        out=os.path.join(folder, "out"),
        job=path,
    )


def test_every_key_sets_its_field_with_dates_filled_and_paths_resolved_against_the_job_file(tmp_path):
    path = job(tmp_path, FULL)
    spec = load_job(path, ds="2026-03-01")
    j = os.path.dirname(path)
    assert spec == JobSpec(
        inputs=(f"{j}/data/ds=2026-03-01/*.parquet", "/abs/extra.parquet"),
        model=f"{j}/models/m.onnx",
        model_sha256="E8CFBD1923185E5CE9B5E0BC2D379F2E0D216696A360650D242D299F70A2B010",
        device="cpu",
        threads=2,
        features=("f0", "f1"),
        keep=("id", "segment"),
        on_null="fill",
        fill_value=1.0,
        filter="segment = 'a' AND f2 > 0",
        out=f"{j}/out/ds=20260301",
        history=f"{j}/out/ds=*",  # earlier nights, for the feature-order check
        mode="resume",
        prob_format="list",
        prediction_col="label",
        compression="snappy",
        partition_by=("segment",),
        report=f"{j}/reports/2026-02-28.json",
        output_columns={"prediction": "decision", "score": "confidence"},
        threshold=0.7,
        with_score=True,
        batch_size=1000,
        reference=f"{j}/out/ds=2026-02-28",  # each night against the one before (issue 11)
        max_psi=0.2,
        max_null_rate_change=0.05,
        on_drift="fail",
        job=path,
    )


def test_relative_job_path_gives_relative_paths(tmp_path, monkeypatch):
    job(tmp_path, MINIMAL)
    monkeypatch.chdir(tmp_path)
    spec = load_job("jobs/job.toml")
    assert (spec.model, spec.inputs, spec.out) == ("jobs/m.onnx", ("jobs/in",), "jobs/out")


def test_every_score_option_has_a_job_key():
    """The file and the flags build the same JobSpec: no option only one of them knows."""
    cli_only = {"quiet", "verbose", "log_format"}  # how to log, not what to score
    flags = set(inspect.signature(score).parameters) - cli_only
    keys = {key.field for section in KEYS.values() for key in section.values()}
    keys.add("storage_options")  # the [storage] table: any of pyarrow's option names, as --storage-option
    assert flags == keys
    assert keys == {f.name for f in fields(JobSpec)} - {"job", "history"}  # both set by the job file itself


@pytest.mark.parametrize(
    ("ds", "expected"),
    [
        ("2026-11-20", ("2026-11-20", "20261120", "2026-11-19")),  # a plain day
        ("2026-03-01", ("2026-03-01", "20260301", "2026-02-28")),  # yesterday crosses a month
        ("2028-01-01", ("2028-01-01", "20280101", "2027-12-31")),  # and a year
    ],
)
def test_template_vars(ds, expected):
    got = template_vars(ds)
    assert (got["ds"], got["ds_nodash"], got["yesterday_ds"]) == expected


def test_ds_defaults_to_today():
    from datetime import date

    assert template_vars()["ds"] == date.today().isoformat()


@pytest.mark.parametrize(
    ("overrides", "field", "value"),
    [
        (["output.mode=overwrite"], "mode", "overwrite"),  # bare text is a string
        (['output.mode="overwrite"'], "mode", "overwrite"),  # so is a quoted TOML string
        (["run.batch_size=1000"], "batch_size", 1000),  # a TOML integer
        (['input.keep=["id", "segment"]'], "keep", ("id", "segment")),  # a TOML array
        (["output.prediction_col=2026"], "prediction_col", "2026"),  # a string key keeps numeric-looking text
        (["model.threads=4", "model.threads=8"], "threads", 8),  # the last one wins
        (["output.filter_typo=1"], None, "unknown key 'output.filter_typo'"),  # same key check as the file
        (["run.batch_size=lots"], None, "(--set run.batch_size=lots): key 'run.batch_size' must be an integer"),
        (["mode=overwrite"], None, "must look like section.key=value"),  # no section
    ],
)
def test_set_overrides(tmp_path, overrides, field, value):
    path = job(tmp_path, MINIMAL)
    if field is None:
        with pytest.raises(JobSpecError, match=value.replace("(", r"\(").replace(")", r"\)")):
            load_job(path, overrides=overrides)
    else:
        assert getattr(load_job(path, overrides=overrides), field) == value


def test_set_paths_resolve_like_the_file(tmp_path):
    path = job(tmp_path, MINIMAL)
    assert load_job(path, overrides=["output.path=elsewhere/{ds}"], ds="2026-11-20").out == os.path.join(
        os.path.dirname(path), "elsewhere", "2026-11-20"
    )


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        # a typo in a key: named with its section, with a suggestion
        (MINIMAL.replace('path = "out"', 'pth = "out"'), ["unknown key 'output.pth'", "did you mean 'path'"]),
        # a misspelt section
        (MINIMAL + "[outptu]\nmode = 'x'\n", ["unknown section [outptu]", "did you mean 'output'"]),
        # a key outside any section
        ("mode = 'overwrite'\n" + MINIMAL, ["key 'mode' must be inside a section"]),
        # a number written as a string
        (MINIMAL + "[run]\nbatch_size = '1000'\n", ["'run.batch_size' must be an integer", "without quotes"]),
        # a boolean is not a number
        (MINIMAL + "[run]\nbatch_size = true\n", ["'run.batch_size' must be an integer, got boolean"]),
        # a list written as a comma string
        (MINIMAL.replace('paths = "in"', 'paths = "in"\nkeep = "id,segment"'), ["'input.keep' must be a list"]),
        # a list of numbers where names are expected
        (MINIMAL.replace('paths = "in"', 'paths = "in"\nfeatures = [1, 2]'), ["'input.features' must be a list"]),
        # model inputs map to a column name or a list of them, not numbers
        (MINIMAL.replace('paths = "in"', 'paths = "in"\ncolumns = {age = 3}'), ["'input.columns' must be a table"]),
        # with_score is a boolean
        (MINIMAL.replace('path = "out"', 'path = "out"\nwith_score = "yes"'), ["'output.with_score' must be true"]),
        # a required key missing
        (MINIMAL.replace('[output]\npath = "out"', ""), ["missing required key(s) 'output.path'"]),
        # not TOML at all
        (MINIMAL + "[run\n", ["not valid TOML", "line"]),
        # an unknown placeholder
        (MINIMAL.replace('"out"', '"out/{date}"'), ["unknown placeholder {date} in 'output.path'", "{ds}"]),
        # a value JobSpec rejects, prefixed with the file
        (MINIMAL + "[run]\nbatch_size = 0\n", ["batch_size must be a positive number"]),
        # a choice JobSpec rejects
        (
            MINIMAL.replace('path = "out"', 'path = "out"\nmode = "append"'),
            ["mode must be one of error|overwrite|resume"],
        ),
    ],
)
def test_bad_job_files_name_the_key_and_the_file(tmp_path, text, needles):
    path = job(tmp_path, text)
    with pytest.raises(JobSpecError) as info:
        load_job(path)
    message = str(info.value)
    assert message.startswith(path), message
    assert "\n" not in message
    for needle in needles:
        assert needle in message


@pytest.mark.parametrize(
    "ds",
    [
        "20261120",  # no dashes: date.fromisoformat would take it, Airflow's {{ ds }} never looks like this
        "2026-13-01",  # no such month
        "yesterday",  # words are for the shell: --ds "$(date -d yesterday +%F)"
    ],
)
def test_bad_ds(tmp_path, ds):
    with pytest.raises(JobSpecError, match="--ds must be a date as YYYY-MM-DD"):
        load_job(job(tmp_path, MINIMAL), ds=ds)


def test_missing_job_file(tmp_path):
    with pytest.raises(JobSpecError, match=r"job file .*nope\.toml does not exist"):
        load_job(str(tmp_path / "nope.toml"))


def test_input_columns_from_a_job_file_and_set(tmp_path):
    text = MINIMAL.replace('paths = "in"', 'paths = "in"\ncolumns = {income = "annual_income", X = ["a", "b"]}')
    spec = load_job(job(tmp_path, text))
    assert spec.input_map == {"income": ("annual_income",), "X": ("a", "b")}
    spec = load_job(job(tmp_path, MINIMAL), overrides=['input.columns={city = "town"}'])
    assert spec.input_map == {"city": ("town",)}


def test_storage_table_and_uris(tmp_path):
    path = job(
        tmp_path,
        """
        [model]
        path = "s3://models/m.onnx"
        [input]
        paths = ["s3://lake/events/ds={ds}", "local/in"]
        [output]
        path = "gs://scores/ds={ds}"
        [storage]
        endpoint_override = "127.0.0.1:9000"
        anonymous = true
        connect_timeout = 3
        """,
    )
    spec = load_job(path, ds="2026-11-20", overrides=["storage.scheme=http"])
    assert spec.model == "s3://models/m.onnx"  # URIs are not joined to the job's folder
    assert spec.inputs == ("s3://lake/events/ds=2026-11-20", f"{tmp_path}/jobs/local/in")
    assert spec.out == "gs://scores/ds=2026-11-20"
    expected = {"endpoint_override": "127.0.0.1:9000", "anonymous": True, "connect_timeout": 3.0, "scheme": "http"}
    assert spec.storage_options == expected


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('endpoint = "x"', "unknown storage option 'endpoint' (did you mean 'endpoint_override'?)"),
        ("anonymous = [1]", "key 'storage.anonymous' must be a string, number or true/false, got list [1]"),
    ],
)
def test_bad_storage_table(tmp_path, table, message):
    path = job(tmp_path, MINIMAL + "\n[storage]\n" + table + "\n")
    with pytest.raises(JobSpecError) as info:
        load_job(path)
    assert message in str(info.value)


def test_drift_flags_of_run_win_over_the_job_file(tmp_path):
    from typer.testing import CliRunner

    from batchscore.cli import app

    path = job(tmp_path, MINIMAL + '[drift]\nreference = "nowhere"\non_drift = "fail"\n')
    result = CliRunner().invoke(app, ["run", path, "--dry-run", "--on-drift", "bogus"])
    assert result.exit_code == 2 and "on_drift must be one of warn|fail" in result.output
