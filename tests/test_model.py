"""Model loading: ZipMap surgery, class labels, kinds, descriptions."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import direct_run, training_data

from batchscore import Model
from batchscore.errors import JobSpecError, ModelError
from batchscore.outputs import output_columns


@pytest.mark.parametrize(
    ("name", "kind", "labels", "zipmap"),
    [
        ("logreg_zipmap", "classifier", [0, 1, 2], True),
        ("logreg", "classifier", [0, 1, 2], False),
        ("forest", "classifier", [0, 1, 2], True),
        ("strings", "classifier", ["high", "low", "mid"], True),
        ("mlp", "classifier", ["high", "low", "mid"], False),
        ("regressor", "regressor", None, False),
        ("generic", "generic", None, False),
    ],
)
def test_kind_labels_and_zipmap(models, name, kind, labels, zipmap):
    model = Model(str(models[name]), device="cpu")
    assert model.kind == kind
    assert model.class_labels == labels
    assert model.zipmap_removed is zipmap
    assert model.provider == "CPUExecutionProvider"


def test_zipmap_removed_graph_gives_the_same_numbers(models):
    x, _ = training_data(rows=50, seed=3)
    model = Model(str(models["logreg_zipmap"]), device="cpu")
    values = model.run({"X": x})
    label, zipmap = direct_run(models["logreg_zipmap"], x)
    np.testing.assert_array_equal(values["output_label"], label)
    expected = np.array([[row[k] for k in sorted(row)] for row in zipmap], dtype=np.float32)
    np.testing.assert_array_equal(values["output_probability"], expected)
    assert values["output_probability"].shape == (50, 3)


def test_describe(models):
    info = Model(str(models["strings"]), device="cpu").describe()
    assert info["inputs"] == ["X: tensor(float) [N, 6]"]
    assert info["outputs"] == ["output_label: tensor(string) [N]", "output_probability: tensor(float) [N, 3]"]
    assert info["opsets"]["ai.onnx.ml"] >= 1
    assert len(info["sha256"]) == 64 and info["size_bytes"] > 0
    assert info["producer"].startswith("skl2onnx")


def test_output_whose_first_dimension_is_not_rows_is_an_error(models):
    import pyarrow as pa

    from batchscore.outputs import OutputColumn, decode_outputs

    col = OutputColumn("y", pa.float32(), "y", "value")
    with pytest.raises(ModelError, match=r"model output 'y' has shape \[3\] for a batch of 4 rows"):
        decode_outputs([col], {"y": np.zeros(3, np.float32)}, rows=4, mask=None)


@pytest.mark.parametrize(
    ("options", "error", "needle"),
    [
        ({"device": "tpu"}, JobSpecError, r"device must be one of auto\|cpu\|cuda, got 'tpu'"),  # not run on the CPU
        ({"device": "cpu", "threads": 0}, JobSpecError, r"threads must be at least 1, got 0"),
        ({"device": "cpu", "threads": "2"}, JobSpecError, r"threads must be an integer, got str '2'"),
    ],
)
def test_model_options_are_checked_before_loading(models, options, error, needle):
    with pytest.raises(error, match=needle):
        Model(models["logreg"], **options)


def test_unloadable_model_names_the_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01garbage")
    with pytest.raises(ModelError, match=r"bad.onnx"):
        Model(str(bad), device="cpu")


def test_io_binding_path_gives_the_same_numbers(models):
    """The GPU path's IO binding, exercised with CPU buffers so it runs in CI too."""
    model = Model(str(models["logreg_zipmap"]), device="cpu")
    model._bind_device = "cpu"
    x, _ = training_data(rows=70, seed=5)
    plain = model.run({"X": x})
    for rows in (70, 70, 13):  # a reused buffer, then a last-batch shape
        bound = dict(zip(model.output_names, model._run_bound({"X": x[:rows]}), strict=True))
        np.testing.assert_array_equal(bound["output_label"], plain["output_label"][:rows])
        np.testing.assert_array_equal(bound["output_probability"], plain["output_probability"][:rows])
    assert len(model._device_inputs) == 2


@pytest.mark.parametrize(
    ("name", "options", "columns"),
    [
        # classifier defaults: the label, then one probability per class
        ("logreg", {}, ["prediction", "prob_0", "prob_1", "prob_2"]),
        # probabilities as one list column, plus the score
        ("logreg", {"prob_format": "list", "with_score": True}, ["prediction", "probabilities", "score"]),
        # --output picks and renames default columns, in the order given
        ("logreg", {"rename": {"prob_2": "p_high", "prediction": "label"}}, ["p_high", "label"]),
        # --output can take a raw model output too (here the [N, 3] tensor as a list column)
        ("logreg_zipmap", {"rename": {"output_probability": "probs"}}, ["probs"]),
        # the score can be picked without --with-score
        ("strings", {"rename": {"score": "confidence"}}, ["confidence"]),
        # regressors: one prediction column, renamable
        ("regressor", {"rename": {"prediction": "y_hat"}}, ["y_hat"]),
        # generic models: a column per output, each pickable by its name
        ("generic", {"rename": {"total": "sum"}}, ["sum"]),
    ],
)
def test_output_columns(models, name, options, columns):
    model = Model(str(models[name]), device="cpu")
    picked = output_columns(
        model, prediction_col="prediction", prob_format=options.pop("prob_format", "columns"), **options
    )
    assert [c.name for c in picked] == columns


def test_threshold_and_score_decode(tmp_path):
    import pyarrow as pa

    from batchscore.outputs import OutputColumn, decode_outputs

    probs = np.array([[0.2, 0.8], [0.4, 0.6], [0.9, 0.1]], dtype=np.float32)
    label = OutputColumn("prediction", pa.string(), "p", "threshold", 1, 0.7, ("good", "bad"))
    score = OutputColumn("score", pa.float32(), "p", "score", 1, 0.7)
    plain_score = OutputColumn("score", pa.float32(), "p", "score")
    got = decode_outputs([label, score, plain_score], {"p": probs}, rows=3, mask=np.array([False, False, True]))
    assert got[0].to_pylist() == ["bad", "good", None]  # positive only when its probability >= 0.7
    assert got[1].to_pylist() == pytest.approx([0.8, 0.4, None])  # the predicted class's probability
    assert got[2].to_pylist() == pytest.approx([0.8, 0.6, None])  # no threshold: the max probability


def test_fixed_batch_dimension(models, helper_models):
    assert Model(str(helper_models["fixed4"]), device="cpu").batch_dim == 4
    assert Model(str(models["logreg"]), device="cpu").batch_dim is None


def test_inputs_an_imputer_reads_are_found(models, imputing_model, tmp_path):
    """skl2onnx writes SimpleImputer as an Imputer node replacing NaN; the inputs that flow into it impute NaN."""
    assert Model(imputing_model, device="cpu").imputed_inputs == {"a", "b"}  # through a Concat; not c or n
    assert Model(imputing_model, device="cpu").describe()["imputes_nan"] == ["a", "b"]
    assert Model(models["logreg"], device="cpu").imputed_inputs == frozenset()
    from skl2onnx import to_onnx
    from sklearn.impute import SimpleImputer

    x, _ = training_data(rows=50)
    sentinel = SimpleImputer(missing_values=-1.0).fit(x)  # replaces -1, not NaN: a null is not what it imputes
    path = tmp_path / "sentinel.onnx"
    path.write_bytes(to_onnx(sentinel, x[:1]).SerializeToString())
    assert Model(path, device="cpu").imputed_inputs == frozenset()


# --- the model read without the onnx package (issue 15) ---

FIXTURE_MLP = __import__("pathlib").Path(__file__).parent / "fixtures" / "torch_mlp.onnx"


def all_models(models, helper_models, boosted_models, mixed_model, imputing_model):
    found = {**models, **{f"helper_{k}": v for k, v in helper_models.items()}}
    found.update({f"boosted_{k}": v for k, v in boosted_models.items()})
    found["mixed"] = mixed_model
    found["imputing"] = imputing_model
    found["torch_mlp"] = FIXTURE_MLP
    return found


def test_the_wire_reader_reads_what_onnx_reads(models, helper_models, boosted_models, mixed_model, imputing_model):
    from batchscore.model import _read_onnx, _read_wire

    read = 0
    for name, path in all_models(models, helper_models, boosted_models, mixed_model, imputing_model).items():
        wire, full = _read_wire(str(path), None), _read_onnx(str(path), None)
        if full.zipmap_removed:
            assert wire is None, name  # a ZipMap to cut: onnx does it
            continue
        if wire is None:
            continue  # something the wire reader leaves to onnx: onnx reads it, as before
        assert wire == full, name
        read += 1
        data = path.read_bytes() if hasattr(path, "read_bytes") else open(path, "rb").read()  # noqa: SIM115
        assert _read_wire("remote.onnx", data) == _read_onnx("remote.onnx", data), name  # a model from a store
    assert read >= 10


def test_a_run_without_zipmap_does_not_import_onnx(models, tmp_path):
    import subprocess
    import sys

    code = (
        "import sys, batchscore; m = batchscore.Model(sys.argv[1], device='cpu'); "
        "print(m.kind, m.class_labels, 'onnx' in sys.modules)"
    )

    def loaded(name: str) -> list[str]:
        args = [sys.executable, "-c", code, str(models[name])]
        return subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()

    assert loaded("logreg") == ["classifier", "[0,", "1,", "2]", "False"]
    assert loaded("logreg_zipmap")[-1] == "True"  # a ZipMap to cut: onnx does the surgery


@pytest.mark.parametrize(
    "data",
    [
        b"",  # empty
        b"\x3a\x05\x0a\x03",  # a graph field that runs past the end of the file
        b"\x3a\x02\x5a\x00",  # a graph with an input that has no type
        bytes(range(256)),  # noise
    ],
)
def test_malformed_files_are_left_to_onnx(tmp_path, data):
    from batchscore import _onnxwire

    path = tmp_path / "odd.onnx"
    path.write_bytes(data)
    with pytest.raises(_onnxwire.NeedsOnnxError):
        _onnxwire.read(str(path))
    with pytest.raises(ModelError, match=r"odd.onnx"):
        Model(str(path), device="cpu")
