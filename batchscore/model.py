"""The ONNX model: load, inspect, run (see session.py for devices, outputs.py for columns).

At load time a ZipMap node (skl2onnx's default dict-per-row probability output)
is cut out of the graph with the ``onnx`` library and replaced by the float
``[N, k]`` tensor beneath it, which is the same numbers about 20x faster. The
class labels come from the classifier node's attributes.

Models without a ZipMap are described from their protobuf wire format
(:mod:`batchscore._onnxwire`) and handed to onnxruntime as they are, so a run
does not import ``onnx`` at all: about 0.1 s of start-up. Anything that reader
cannot describe exactly is read with ``onnx``, as before.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import onnxruntime as ort

from batchscore import _onnxwire
from batchscore.errors import ModelError
from batchscore.session import create_session
from batchscore.spec import Device, check_model_options
from batchscore.storage import describe_os_error, is_uri, resolve

if TYPE_CHECKING:
    from typing import Unpack

    import onnx

    from batchscore.frames import Frame, ScoreOptions


Kind = Literal["classifier", "regressor", "generic"]
_LABEL_ATTRS = ("classlabels_strings", "classlabels_int64s", "classlabels_ints")
_FLOAT_TYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16))


@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output: name, numpy dtype (None if not a tensor), shape."""

    name: str
    type: str
    dtype: np.dtype[Any] | None
    shape: tuple[int | str | None, ...] | None

    def describe(self) -> str:
        dims = "?" if self.shape is None else "[" + ", ".join("N" if d is None else str(d) for d in self.shape) + "]"
        return f"{self.name}: {self.type} {dims}"


def file_sha256(path: str) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_remote(uri: str, options: Mapping[str, Any] | None) -> bytes:
    """The model's bytes from an object store, read once: they are hashed, checked and loaded from memory."""
    try:
        where = resolve(uri, options)
        if not where.is_file():
            msg = f"model {uri!r} does not exist; pass --model with the URI of an .onnx object"
            raise ModelError(msg)
        return where.read_bytes()
    except OSError as exc:
        msg = f"cannot read model {uri}: {describe_os_error(exc)}"
        raise ModelError(msg) from exc


class Model:
    """A loaded ONNX model with an onnxruntime session on the chosen device."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        device: Device = "auto",
        threads: int | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        check_model_options(device=device, threads=threads)
        if not isinstance(path, str | os.PathLike):
            msg = f"model must be the path of an .onnx file, got {type(path).__name__} {path!r}"
            raise ModelError(msg)
        path = os.fspath(path)
        self.path = path
        data = _read_remote(path, storage_options) if is_uri(path) and not path.startswith("file://") else None
        if data is not None:
            self.size = len(data)
            self.sha256 = hashlib.sha256(data).hexdigest()
        else:
            path = path.removeprefix("file://")
            if not os.path.isfile(path):
                msg = f"model file {path!r} does not exist; pass --model with the path of an .onnx file"
                raise ModelError(msg)
            self.size = os.path.getsize(path)
            self.sha256 = file_sha256(path)
        graph = _read_wire(path, data) or _read_onnx(path, data)
        self.opsets = graph.opsets
        self.producer = graph.producer
        self.class_labels = graph.class_labels
        self.zipmap_removed = graph.zipmap_removed
        self.inputs = graph.inputs
        self.imputed_inputs = graph.imputed_inputs
        """Inputs the model imputes itself: an ``Imputer`` node replacing NaN reads them (skl2onnx's SimpleImputer).
        Nulls reach them as NaN with ``on_null="fill"`` and no fill value."""
        self.outputs = graph.outputs
        self.feature_names = graph.feature_names
        """The column names the model was trained on, in order, when its exporter stored them
        (``metadata_props`` key ``feature_names``: a JSON list or comma-separated names)."""
        self.kind = self._classify()
        model_source = graph.source
        del graph
        self.session, self.provider = create_session(model_source, path, device=device, threads=threads)
        self.output_names = [o.name for o in self.outputs]
        self._device_inputs: dict[tuple[str, tuple[int, ...], str], Any] = {}
        self._bind_device = "cuda"
        self._bind_lock = threading.Lock()  # the cached device buffers: a LazyFrame may score batches in threads

    def _classify(self) -> Kind:
        outs = self.outputs
        if len(outs) == 2:
            label, probs = outs
            if (
                label.dtype is not None
                and label.dtype.kind in "iOU"
                and probs.dtype in _FLOAT_TYPES
                and probs.shape is not None
                and len(probs.shape) == 2
            ):
                width = probs.shape[1]
                if self.class_labels is None and isinstance(width, int):
                    self.class_labels = list(range(width))  # labels not recorded: class indices
                if self.class_labels is not None:
                    return "classifier"
        if len(outs) == 1 and outs[0].dtype in _FLOAT_TYPES and outs[0].shape is not None:
            shape = outs[0].shape
            if len(shape) == 1 or (len(shape) == 2 and shape[1] == 1):
                return "regressor"
        return "generic"

    @property
    def batch_dim(self) -> int | None:
        """The fixed number of rows every call takes, or None when the batch axis is dynamic."""
        fixed = {i.shape[0] for i in self.inputs if i.shape and isinstance(i.shape[0], int) and i.shape[0] > 0}
        if len(fixed) > 1:
            dims = ", ".join(i.describe() for i in self.inputs)
            msg = f"model {self.path} has inputs with different fixed batch sizes ({dims}); re-export it with one"
            raise ModelError(msg)
        return fixed.pop() if fixed else None

    @property
    def is_binary(self) -> bool:
        """A classifier with exactly two classes."""
        return self.kind == "classifier" and len(self.class_labels or ()) == 2

    def kind_text(self) -> str:
        """The kind in words, for messages: "a classifier with 3 classes", "a regressor model"."""
        if self.kind == "classifier":
            return f"a classifier with {len(self.class_labels or ())} classes"
        return f"a {self.kind} model"

    def score(self, data: Frame, **options: Unpack[ScoreOptions]) -> Any:
        """Score a frame or Parquet path with this loaded model: ``batchscore.score(data, self, **options)``."""
        from batchscore.frames import score

        return score(data, self, **options)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One inference call; returns every output by name."""
        try:
            if self.provider == "CUDAExecutionProvider" and all(a.dtype.kind in "fiub" for a in feeds.values()):
                with self._bind_lock:
                    values = self._run_bound(feeds)
            else:
                values = self.session.run(self.output_names, feeds)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument types
            msg = f"model {self.path} failed on a batch: {' '.join(str(exc).split())}"
            raise ModelError(msg) from exc
        return dict(zip(self.output_names, values, strict=True))

    def _run_bound(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """GPU path: inputs copied into preallocated device buffers, outputs copied back once."""
        binding = self.session.io_binding()
        for name, array in feeds.items():
            key = (name, array.shape, array.dtype.str)
            device = self._device_inputs.get(key)
            if device is None:
                if len(self._device_inputs) >= 8:  # the full batch shape, plus a few last-batch shapes
                    self._device_inputs.clear()
                device = ort.OrtValue.ortvalue_from_shape_and_type(array.shape, array.dtype.type, self._bind_device, 0)
                self._device_inputs[key] = device
            device.update_inplace(np.ascontiguousarray(array))
            binding.bind_ortvalue_input(name, device)
        for name in self.output_names:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        return list(binding.copy_outputs_to_cpu())

    def describe(self) -> dict[str, Any]:
        """What `batchscore inspect` prints."""
        return {
            "path": self.path,
            "size_bytes": self.size,
            "sha256": self.sha256,
            "producer": self.producer,
            "opsets": self.opsets,
            "kind": self.kind,
            "inputs": [i.describe() for i in self.inputs],
            "outputs": [o.describe() for o in self.outputs],
            "class_labels": self.class_labels,
            "imputes_nan": sorted(self.imputed_inputs),
            "zipmap_removed": self.zipmap_removed,
            "provider": self.provider,
        }


@dataclass
class _Graph:
    """What a model file says about itself, and what to hand onnxruntime: its path or bytes, or the cut graph."""

    opsets: dict[str, int]
    producer: str
    class_labels: list[str] | list[int] | None
    zipmap_removed: bool
    inputs: list[TensorInfo]
    imputed_inputs: frozenset[str]
    outputs: list[TensorInfo]
    feature_names: tuple[str, ...] | None
    source: str | bytes


def _read_wire(path: str, data: bytes | None) -> _Graph | None:
    """The model read without the onnx package; None when it needs it (a ZipMap to cut, anything unusual)."""
    try:
        wire = _onnxwire.read(path) if data is None else _onnxwire.parse(data)
    except _onnxwire.NeedsOnnxError:
        return None
    if wire.has_zipmap:
        return None

    def info(value: _onnxwire.Value) -> TensorInfo:
        name, dtype = _onnxwire.ELEMENT_TYPES[value.elem_type]
        return TensorInfo(value.name, f"tensor({name})", dtype, value.shape)

    return _Graph(
        opsets=wire.opsets,
        producer=wire.producer,
        class_labels=wire.class_labels,
        zipmap_removed=False,
        inputs=[info(v) for v in wire.inputs],
        imputed_inputs=wire.imputed_inputs(),
        outputs=[info(v) for v in wire.outputs],
        feature_names=_parse_feature_names(wire.metadata.get(FEATURE_NAMES_KEY)),
        source=path if data is None else data,
    )


def _read_onnx(path: str, data: bytes | None) -> _Graph:
    """The model read with the onnx package, its ZipMap cut out."""
    import onnx  # about 0.1 s of import: only for models that need it

    try:
        proto = onnx.load_from_string(data) if data is not None else onnx.load(path, load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError, ...
        msg = f"cannot load ONNX model {path}: {' '.join(str(exc).split())}; check that it is a complete .onnx file"
        raise ModelError(msg) from exc
    class_labels = _class_labels(proto)
    zipmap_removed = _remove_zipmap(proto)
    source: str | bytes = path if data is None else data
    return _Graph(
        opsets={(o.domain or "ai.onnx"): o.version for o in proto.opset_import},
        producer=f"{proto.producer_name} {proto.producer_version}".strip(),
        class_labels=class_labels,
        zipmap_removed=zipmap_removed,
        inputs=[_tensor_info(v) for v in _graph_inputs(proto)],
        imputed_inputs=_imputed_inputs(proto),
        outputs=[_tensor_info(v) for v in proto.graph.output],
        feature_names=_feature_names(proto),
        source=proto.SerializeToString() if zipmap_removed else source,
    )


def _graph_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {i.name for i in proto.graph.initializer}
    return [i for i in proto.graph.input if i.name not in initializers]


def _imputed_inputs(proto: onnx.ModelProto) -> frozenset[str]:
    """Graph inputs whose values flow into an ``Imputer`` that replaces NaN, through any nodes (Concat, Cast...)."""
    from onnx import helper

    graph_inputs = {i.name for i in _graph_inputs(proto)}
    producers = {out: node for node in proto.graph.node for out in node.output}
    found: set[str] = set()
    for node in proto.graph.node:
        if node.op_type != "Imputer":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        replaced = attrs.get("replaced_value_float", 0.0)  # the ONNX default: then NaN is not what it replaces
        if not (isinstance(replaced, float) and math.isnan(replaced)):
            continue
        seen: set[str] = set()
        stack = list(node.input)
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            if name in graph_inputs:
                found.add(name)
            elif name in producers:
                stack.extend(producers[name].input)
    return frozenset(found)


def _tensor_info(value: onnx.ValueInfoProto) -> TensorInfo:
    import onnx
    from onnx import helper

    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        return TensorInfo(value.name, _type_str(value.type), None, None)
    tensor = value.type.tensor_type
    elem = tensor.elem_type
    dtype = np.dtype(object) if elem == onnx.TensorProto.STRING else helper.tensor_dtype_to_np_dtype(elem)
    shape: tuple[int | str | None, ...] | None = None
    if tensor.HasField("shape"):
        shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
    type_name = helper.tensor_dtype_to_string(elem).removeprefix("TensorProto.").lower()
    return TensorInfo(value.name, f"tensor({type_name})", dtype, shape)


def _type_str(type_proto: onnx.TypeProto) -> str:
    return " ".join(str(type_proto).split())


def _class_labels(proto: onnx.ModelProto) -> list[str] | list[int] | None:
    """Labels from a classifier node's attributes (ai.onnx.ml), or from the ``classes``
    initializer that skl2onnx gathers labels from in graphs without one (MLP, ...)."""
    import onnx.numpy_helper
    from onnx import helper

    for node in proto.graph.node:
        for attr in node.attribute:
            if attr.name in _LABEL_ATTRS:
                value = helper.get_attribute_value(attr)
                if attr.name == "classlabels_strings":
                    return [v.decode() if isinstance(v, bytes) else str(v) for v in value]
                return [int(v) for v in value]
    gathered = {n.input[0] for n in proto.graph.node if n.op_type == "ArrayFeatureExtractor" and n.input}
    for init in proto.graph.initializer:
        if init.name == "classes" and init.name in gathered:
            values = onnx.numpy_helper.to_array(init).ravel().tolist()
            return [v.decode() if isinstance(v, bytes) else v for v in values]
    return None


def _remove_zipmap(proto: onnx.ModelProto) -> bool:
    """Replace each ZipMap feeding a graph output with an Identity of its float tensor input."""
    import onnx
    from onnx import helper

    graph = proto.graph
    outputs = {o.name: i for i, o in enumerate(graph.output)}
    removed = False
    for index, node in enumerate(list(graph.node)):
        if node.op_type != "ZipMap" or node.output[0] not in outputs:
            continue
        labels = next(helper.get_attribute_value(a) for a in node.attribute if a.name.startswith("classlabels"))
        out_name = node.output[0]
        identity = helper.make_node("Identity", [node.input[0]], [out_name], name=f"{node.name}_tensor")
        graph.node.remove(node)
        graph.node.insert(index, identity)
        position = outputs[out_name]
        graph.output.remove(graph.output[position])
        graph.output.insert(
            position, helper.make_tensor_value_info(out_name, onnx.TensorProto.FLOAT, [None, len(labels)])
        )
        removed = True
    return removed


FEATURE_NAMES_KEY = "feature_names"


def _feature_names(proto: Any) -> tuple[str, ...] | None:
    for prop in proto.metadata_props:
        if prop.key == FEATURE_NAMES_KEY:
            return _parse_feature_names(prop.value)
    return None


def _parse_feature_names(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    text = value.strip()
    try:
        names = json.loads(text) if text.startswith("[") else [n.strip() for n in text.split(",")]
    except ValueError:
        return None
    if isinstance(names, list) and names and all(isinstance(n, str) and n for n in names):
        return tuple(names)
    return None
