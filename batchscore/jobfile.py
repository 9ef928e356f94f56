"""Job files: ``jobs/*.toml`` -> the same validated :class:`JobSpec` the flags build.

::

    [model]                      [input]                     [output]                  [run]
    path = "model.onnx"          paths = ["data/ds={ds}"]    path = "out/ds={ds}"      batch_size = 65536
    sha256 = "..."               features = ["a", "b"]       mode = "resume"           engine = "processes"
    device = "auto"              keep = ["id"]               prob_format = "columns"   workers = 8
    threads = 8                  on_null = "error"           prediction_col = "prediction"
                                                                                       ray_address = "auto"
                                 fill_value = 0.0            compression = "zstd"
                                 filter = "region = 'eu'"    format = "parquet"  # or "delta"
                                                             partition_by = ["region"]
                                 columns = {income = "annual_income", x = ["a", "b"]}
                                                             report = "out/report.json"
                                                             columns = {prediction = "decision"}
                                                             threshold = 0.7
                                                             with_score = true
                                                             summary = true
    [drift]
    reference = "out/ds={yesterday_ds}"              # compare with an earlier output (missing: a warning)
    max_psi = 0.25
    max_null_rate_change = 0.1
    on_drift = "warn"                                # or "fail": exit 6 after the commit

``[storage]`` holds object-store options for every path (pyarrow's names:
``endpoint_override = "127.0.0.1:9000"``, ``region``, ``scheme``, ``anonymous``, ...);
a path may be a URI (``s3://bucket/prefix``), left as it is.

Required: ``model.path``, ``input.paths``, ``output.path``. ``{ds}``,
``{ds_nodash}`` and ``{yesterday_ds}`` are filled in paths (``drift.reference`` too) and the filter.
Relative paths resolve against the job file's folder, wherever the scheduler
starts the process (cron starts in $HOME, Airflow in a temporary folder).
``--set section.key=value`` overrides a key; the value is read as TOML
(``1000``, ``["a", "b"]``, ``"x"``), or taken as text if it is not TOML.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from batchscore.errors import JobSpecError
from batchscore.spec import JobSpec
from batchscore.storage import is_uri


@dataclass(frozen=True)
class _Key:
    field: str
    """The JobSpec field this key sets."""
    kind: str
    """str, int, float, bool, list (of strings), paths (a string or a list of strings), or table (of names)."""
    path: bool = False
    """A path: templated and resolved against the job file's folder."""
    template: bool = False


KEYS: dict[str, dict[str, _Key]] = {
    "model": {
        "path": _Key("model", "str", path=True),
        "sha256": _Key("model_sha256", "str"),
        "device": _Key("device", "str"),
        "threads": _Key("threads", "int"),
    },
    "input": {
        "paths": _Key("inputs", "paths", path=True),
        "features": _Key("features", "list"),
        "keep": _Key("keep", "list"),
        "on_null": _Key("on_null", "str"),
        "fill_value": _Key("fill_value", "float"),
        "filter": _Key("filter", "str", template=True),
        "columns": _Key("input_columns", "table"),
    },
    "output": {
        "path": _Key("out", "str", path=True),
        "mode": _Key("mode", "str"),
        "prob_format": _Key("prob_format", "str"),
        "prediction_col": _Key("prediction_col", "str"),
        "compression": _Key("compression", "str"),
        "format": _Key("format", "str"),
        "schema_mode": _Key("schema_mode", "str"),
        "partition_by": _Key("partition_by", "list"),
        "report": _Key("report", "str", path=True),
        "columns": _Key("output_columns", "table"),
        "threshold": _Key("threshold", "float"),
        "with_score": _Key("with_score", "bool"),
        "summary": _Key("summary", "bool"),
    },
    "run": {
        "batch_size": _Key("batch_size", "int"),
        "engine": _Key("engine", "str"),
        "workers": _Key("workers", "int"),
        "ray_address": _Key("ray_address", "str"),
    },
    "storage": {},  # any key: pyarrow's storage option names, checked by JobSpec
    "drift": {
        "reference": _Key("reference", "str", path=True),
        "max_psi": _Key("max_psi", "float"),
        "max_null_rate_change": _Key("max_null_rate_change", "float"),
        "on_drift": _Key("on_drift", "str"),
    },
}
REQUIRED = ("model.path", "input.paths", "output.path")
_KINDS = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "table": 'a table of names, e.g. {income = "annual_income", x = ["a", "b"]}',
    "list": 'a list of strings, e.g. ["a", "b"]',
    "paths": 'a string or a list of strings, e.g. ["data/a", "data/b/*.parquet"]',
}
_DS = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATED = re.compile(r"\{(ds|ds_nodash|yesterday_ds)\}")


def template_vars(ds: str | None = None) -> dict[str, str]:
    """``{ds}``, ``{ds_nodash}``, ``{yesterday_ds}`` for a ``YYYY-MM-DD`` date (default: today)."""
    if ds is None:
        day = date.today()
    else:
        try:
            if not _DS.fullmatch(ds):
                raise ValueError(ds)
            day = date.fromisoformat(ds)
        except ValueError:
            msg = f"--ds must be a date as YYYY-MM-DD (as Airflow's {{{{ ds }}}}), got {ds!r}"
            raise JobSpecError(msg) from None
    return {
        "ds": day.isoformat(),
        "ds_nodash": day.strftime("%Y%m%d"),
        "yesterday_ds": (day - timedelta(days=1)).isoformat(),
    }


def load_job(path: str, *, ds: str | None = None, overrides: Sequence[str] = ()) -> JobSpec:
    """Read a job file, apply ``section.key=value`` overrides and the date, and build its JobSpec."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise JobSpecError(f"job file {path} does not exist; check the path") from None
    except OSError as exc:
        raise JobSpecError(f"cannot read job file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise JobSpecError(f"{path}: not valid TOML: {exc}; fix the syntax there") from exc
    except UnicodeDecodeError as exc:
        msg = (
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "TOML files are UTF-8: save it as UTF-8"
        )
        raise JobSpecError(msg) from exc
    origin: dict[str, str] = {}
    for item in overrides:
        section, key, value = _parse_override(item)
        table = data.setdefault(section, {})
        if isinstance(table, dict):
            table[key] = value
        origin[f"{section}.{key}"] = f"--set {item}"
    variables = template_vars(ds)
    folder = os.path.dirname(path)
    fields: dict[str, Any] = {}
    storage_options: dict[str, Any] = {}
    sections = "[" + "], [".join(KEYS) + "]"
    for section, table in data.items():
        known = KEYS.get(section)
        if known is None:
            if not isinstance(table, dict):
                msg = f"{path}: key {section!r} must be inside a section ({sections})"
            else:
                msg = f"{path}: unknown section [{section}]{_did_you_mean(section, KEYS)}; sections: {sections}"
            raise JobSpecError(msg)
        if not isinstance(table, dict):
            raise JobSpecError(f"{path}: {section!r} must be a section [{section}], not a value")
        for key, value in table.items():
            name = f"{section}.{key}"
            where = f"{path} ({origin[name]})" if name in origin else path
            if section == "storage":
                storage_options[key] = _storage_value(value, name=name, where=where)
                continue
            spec_key = known.get(key)
            if spec_key is None:
                msg = (
                    f"{where}: unknown key {name!r}{_did_you_mean(key, known)}; keys in [{section}]: {', '.join(known)}"
                )
                raise JobSpecError(msg)
            fields[spec_key.field] = _convert(value, spec_key, name=name, where=where, env=variables, folder=folder)
            if spec_key.field == "out" and isinstance(value, str) and _DATED.search(value):
                earlier = {k: "*" for k in variables}
                fields["history"] = _convert(value, spec_key, name=name, where=where, env=earlier, folder=folder)
    missing = [k for k in REQUIRED if KEYS[k.split(".")[0]][k.split(".")[1]].field not in fields]
    if missing:
        msg = f"{path}: missing required key(s) {', '.join(map(repr, missing))}; add them (see README, Running nightly)"
        raise JobSpecError(msg)
    try:
        return JobSpec(**fields, job=path, storage_options=storage_options)
    except JobSpecError as exc:
        raise JobSpecError(f"{path}: {exc}") from exc


def _parse_override(item: str) -> tuple[str, str, object]:
    name, sep, raw = item.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not section or not key:
        msg = f"--set {item!r} must look like section.key=value, e.g. --set output.mode=overwrite"
        raise JobSpecError(msg)
    spec_key = KEYS.get(section, {}).get(key)
    try:
        value: object = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # plain text: --set output.path=out/x
    if spec_key is not None and spec_key.kind in ("str", "paths") and not isinstance(value, str | list):
        value = raw  # --set output.prediction_col=2026 means the text
    return section, key, value


def _convert(value: object, key: _Key, *, name: str, where: str, env: dict[str, str], folder: str) -> Any:
    kind = key.kind
    ok = (
        (kind == "str" and isinstance(value, str))
        or (kind == "int" and isinstance(value, int) and not isinstance(value, bool))
        or (kind == "float" and isinstance(value, int | float) and not isinstance(value, bool))
        or (kind in ("list", "paths") and isinstance(value, list) and all(isinstance(v, str) for v in value))
        or (kind == "paths" and isinstance(value, str))
        or (kind == "bool" and isinstance(value, bool))
        or (kind == "table" and isinstance(value, dict) and all(_is_names(v) for v in value.values()))
    )
    if not ok:
        found = f"{_toml_type(value)} {value!r}"
        hint = "; write it without quotes" if isinstance(value, str) and kind in ("int", "float") else ""
        msg = f"{where}: key {name!r} must be {_KINDS[kind]}, got {found}{hint}"
        raise JobSpecError(msg)
    if kind == "float":
        return float(value)  # type: ignore[arg-type]
    if kind in ("list", "paths"):
        items = [value] if isinstance(value, str) else list(value)  # type: ignore[call-overload]
        if key.path:
            items = [_path(_fill(v, env, name=name, where=where), folder) for v in items]
        return tuple(items)
    if key.path:
        return _path(_fill(str(value), env, name=name, where=where), folder)
    if key.template:
        return _fill(str(value), env, name=name, where=where)
    return value


def _storage_value(value: object, *, name: str, where: str) -> object:
    if isinstance(value, str | int | float | bool):
        return value
    msg = f"{where}: key {name!r} must be a string, number or true/false, got {_toml_type(value)} {value!r}"
    raise JobSpecError(msg)


def _is_names(value: object) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))


def _fill(text: str, variables: dict[str, str], *, name: str, where: str) -> str:
    try:
        return text.format_map(variables)
    except KeyError as exc:
        problem = f"unknown placeholder {{{exc.args[0]}}}"
    except (ValueError, IndexError, AttributeError) as exc:
        problem = f"bad placeholder ({exc})"
    msg = (
        f"{where}: {problem} in {name!r} ({text!r}); use {{ds}}, {{ds_nodash}} or {{yesterday_ds}}, "
        "and {{ }} for literal braces"
    )
    raise JobSpecError(msg)


def _path(text: str, folder: str) -> str:
    if is_uri(text):
        return text  # s3://bucket/key: nothing to resolve against the job's folder
    text = os.path.expanduser(text)
    return text if os.path.isabs(text) else os.path.normpath(os.path.join(folder, text))


def _toml_type(value: object) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "table"}
    return names.get(type(value), type(value).__name__)


def _did_you_mean(word: str, choices: object) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)  # type: ignore[call-overload]
    return f" (did you mean {close[0]!r}?)" if close else ""
