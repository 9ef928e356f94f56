"""The ONNX model: load, inspect, pick the execution provider, decode outputs.

At load time a ZipMap node (skl2onnx's default dict-per-row probability output)
is cut out of the graph with the ``onnx`` library and replaced by the float
``[N, k]`` tensor beneath it, which is the same numbers about 20x faster. The
class labels come from the classifier node's attributes.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import importlib.util
import logging
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort
import pyarrow as pa
from onnx import helper

from batchscore.errors import DeviceUnavailableError, JobSpecError, ModelError
from batchscore.spec import Device, ProbFormat

if TYPE_CHECKING:
    from typing import Unpack

    from batchscore.frames import Frame, ScoreOptions

log = logging.getLogger("batchscore")
ort.set_default_logger_severity(3)

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


@dataclass(frozen=True)
class OutputColumn:
    """One output column: its name, Arrow type, and where its values come from."""

    name: str
    type: pa.DataType
    source: str
    """The model output it is read from."""
    role: Literal["label", "prob", "probs", "value", "list", "threshold", "score"]
    index: int = 0
    """Class index for role 'prob'; the positive class for role 'threshold'."""
    threshold: float | None = None
    """Roles 'threshold' and 'score': the positive class wins when its probability >= threshold."""
    classes: tuple[Any, ...] = ()
    """Role 'threshold': the class labels, negative first."""


def file_sha256(path: str) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Model:
    """A loaded ONNX model with an onnxruntime session on the chosen device."""

    def __init__(self, path: str | os.PathLike[str], *, device: Device = "auto", threads: int | None = None) -> None:
        path = os.fspath(path)
        self.path = path
        if not os.path.isfile(path):
            msg = f"model file {path!r} does not exist; pass --model with the path of an .onnx file"
            raise ModelError(msg)
        self.size = os.path.getsize(path)
        self.sha256 = file_sha256(path)
        try:
            proto = onnx.load(path, load_external_data=False)
        except Exception as exc:  # onnx raises DecodeError, OSError, ...
            msg = f"cannot load ONNX model {path}: {' '.join(str(exc).split())}; check that it is a complete .onnx file"
            raise ModelError(msg) from exc
        self.opsets = {(o.domain or "ai.onnx"): o.version for o in proto.opset_import}
        self.producer = f"{proto.producer_name} {proto.producer_version}".strip()
        self.class_labels = _class_labels(proto)
        self.zipmap_removed = _remove_zipmap(proto)
        self.inputs = [_tensor_info(v) for v in _graph_inputs(proto)]
        self.outputs = [_tensor_info(v) for v in proto.graph.output]
        self.kind = self._classify()
        model_source: str | bytes = path
        if self.zipmap_removed:
            model_source = proto.SerializeToString()
        del proto
        self.session, self.provider = _create_session(model_source, path, device=device, threads=threads)
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

    def output_columns(
        self,
        *,
        prediction_col: str,
        prob_format: ProbFormat,
        threshold: float | None = None,
        with_score: bool = False,
        rename: Mapping[str, str] | None = None,
    ) -> list[OutputColumn]:
        """The columns scoring adds, in order.

        By default: the prediction, then the probabilities (and the score), or one column per output.
        ``rename`` (``--output NAME=COLUMN``) picks and renames, NAME being a default column or a model output.
        """
        if threshold is not None and not self.is_binary:
            msg = (
                f"--threshold needs a binary classifier, but {self.path} is {self._kind_text()}; leave --threshold out"
            )
            raise JobSpecError(msg)
        if with_score and self.kind != "classifier":
            msg = f"--with-score needs a classifier, but {self.path} is {self._kind_text()}; leave --with-score out"
            raise JobSpecError(msg)
        if self.kind == "classifier":
            label, probs = self.outputs
            labels = tuple(self.class_labels or ())
            label_type = pa.string() if label.dtype is not None and label.dtype.kind in "OU" else pa.int64()
            if threshold is None:
                predicted = OutputColumn(prediction_col, label_type, label.name, "label")
            else:
                predicted = OutputColumn(prediction_col, label_type, probs.name, "threshold", 1, threshold, labels)
            per_class = [
                OutputColumn(f"prob_{lab}", pa.float32(), probs.name, "prob", i) for i, lab in enumerate(labels)
            ]
            as_list = OutputColumn("probabilities", pa.list_(pa.float32()), probs.name, "probs")
            score = OutputColumn("score", pa.float32(), probs.name, "score", 1, threshold)
            defaults = [predicted, *(per_class if prob_format == "columns" else [as_list])]
            candidates = [predicted, *per_class, as_list, score]
            if with_score:
                defaults.append(score)
        elif self.kind == "regressor":
            defaults = candidates = [_tensor_column(self.outputs[0], prediction_col)]
        else:
            defaults = candidates = [_tensor_column(out, out.name) for out in self.outputs]
        if not rename:
            return defaults
        return self._pick(candidates, rename)

    def _pick(self, candidates: list[OutputColumn], rename: Mapping[str, str]) -> list[OutputColumn]:
        by_name = {c.name: c for c in candidates}
        tensors = {o.name: o for o in self.outputs}
        picked = []
        for name, column in rename.items():
            if name in by_name:
                picked.append(dataclasses.replace(by_name[name], name=column))
            elif name in tensors:
                picked.append(_tensor_column(tensors[name], column))
            else:
                known = ", ".join([*by_name, *(t for t in tensors if t not in by_name)])
                msg = (
                    f"--output {name}={column}: {name!r} is neither an output column nor a model output "
                    f"(known: {known}); pick one of those"
                )
                raise JobSpecError(msg)
        return picked

    @property
    def is_binary(self) -> bool:
        """A classifier with exactly two classes."""
        return self.kind == "classifier" and len(self.class_labels or ()) == 2

    def _kind_text(self) -> str:
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
            "zipmap_removed": self.zipmap_removed,
            "provider": self.provider,
        }


def decode_outputs(
    columns: Sequence[OutputColumn], values: dict[str, np.ndarray], *, rows: int, mask: np.ndarray | None
) -> list[pa.Array]:
    """Turn the model's output arrays into Arrow columns; ``mask`` marks rows whose outputs are null."""
    for name, arr in values.items():
        if arr.ndim == 0 or arr.shape[0] != rows:
            msg = (
                f"model output {name!r} has shape {list(arr.shape)} for a batch of {rows} rows; "
                "every output must have the row count as its first dimension"
            )
            raise ModelError(msg)
    arrow_mask = None if mask is None else pa.array(mask)
    result: list[pa.Array] = []
    transposed: dict[str, np.ndarray] = {}
    for col in columns:
        arr = values[col.source]
        if col.role in ("threshold", "score"):
            result.append(_from_probabilities(col, arr, mask))
        elif col.role == "prob":
            if col.source not in transposed:
                transposed[col.source] = np.ascontiguousarray(arr.T, dtype=np.float32)
            result.append(pa.array(transposed[col.source][col.index], pa.float32(), mask=mask))
        elif col.role in ("probs", "list"):
            flat = np.ascontiguousarray(arr).reshape(rows, -1)
            width = flat.shape[1]
            value_type = col.type.value_type
            offsets = pa.array(np.arange(0, (rows + 1) * width, width, dtype=np.int32))
            values_arr = pa.array(flat.reshape(-1), value_type)
            result.append(pa.ListArray.from_arrays(offsets, values_arr, type=col.type, mask=arrow_mask))
        else:
            flat = arr.reshape(rows) if arr.ndim == 2 else arr
            result.append(pa.array(flat, col.type, mask=mask))
    return result


def _from_probabilities(col: OutputColumn, probs: np.ndarray, mask: np.ndarray | None) -> pa.Array:
    if col.threshold is None:  # score without a threshold: the winning class's probability
        return pa.array(probs.max(axis=1), pa.float32(), mask=mask)
    positive = probs[:, col.index] >= col.threshold
    if col.role == "score":
        return pa.array(np.where(positive, probs[:, 1], probs[:, 0]), pa.float32(), mask=mask)
    classes = np.array(col.classes, dtype=object if pa.types.is_string(col.type) else np.int64)
    return pa.array(classes[positive.astype(np.intp)], col.type, mask=mask)


def _tensor_column(out: TensorInfo, name: str) -> OutputColumn:
    """A whole output tensor as one column: ``[N]`` and ``[N, 1]`` plain, ``[N, k]`` a list."""
    if out.dtype is None or out.shape is None or not 1 <= len(out.shape) <= 2:
        msg = (
            f"model output {out.describe()} is not a [rows] or [rows, k] tensor, so it cannot become a "
            "column; re-export the model with tensor outputs"
        )
        raise ModelError(msg)
    if len(out.shape) == 2 and out.shape[1] != 1:
        return OutputColumn(name, pa.list_(_arrow_type(out)), out.name, "list")
    return OutputColumn(name, _arrow_type(out), out.name, "value")


def _arrow_type(info: TensorInfo) -> pa.DataType:
    assert info.dtype is not None
    if info.dtype.kind in "OU":
        return pa.string()
    return pa.from_numpy_dtype(info.dtype)


def _graph_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {i.name for i in proto.graph.initializer}
    return [i for i in proto.graph.input if i.name not in initializers]


def _tensor_info(value: onnx.ValueInfoProto) -> TensorInfo:
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


def _cuda_driver_missing() -> str | None:
    """Why CUDA cannot work here, or None when a driver library loads."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return f"this onnxruntime ({ort.__version__}) has no CUDA provider; install onnxruntime-gpu"
    lib = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
    try:
        ctypes.CDLL(lib)
    except OSError:
        return f"no NVIDIA driver found ({lib} does not load): no GPU on this machine"
    return None


def _preload_cuda_wheels() -> None:
    # onnxruntime-gpu[cuda,cudnn] ships CUDA and cuDNN as nvidia-* wheels; load them before the session.
    if importlib.util.find_spec("nvidia") is not None and hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()
        except Exception as exc:  # best effort: a system CUDA may still work
            log.debug("onnxruntime.preload_dlls() failed: %s", exc)


def _available_cores() -> int:
    """Cores this process may run on (taskset and cpusets respected where the OS tells)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _session_options(threads: int | None, severity: int) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or _available_cores()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = severity
    # The CPU arena keeps every batch's peak activations for good; big batches allocate cheaply anyway.
    opts.enable_cpu_mem_arena = False
    # Spinning threads steal the core that reading and writing need.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def _create_session(
    source: str | bytes, path: str, *, device: Device, threads: int | None
) -> tuple[ort.InferenceSession, str]:
    cpu = ["CPUExecutionProvider"]
    reason = None
    if device in ("auto", "cuda"):
        reason = _cuda_driver_missing()
        if reason is None:
            _preload_cuda_wheels()
            session = _new_session(source, path, ["CUDAExecutionProvider", *cpu], _session_options(threads, 4))
            active = session.get_providers()[0]
            if active == "CUDAExecutionProvider":
                log.info("device: CUDA (onnxruntime %s)", ort.__version__)
                return session, active
            reason = "onnxruntime could not start the CUDA provider (CUDA 13 or cuDNN 9 libraries missing?)"
        if device == "cuda":
            msg = (
                f"--device cuda is unavailable: {reason}; install CUDA 13 and cuDNN 9 or "
                "pip install 'batchscore[cuda]', or use --device cpu"
            )
            raise DeviceUnavailableError(msg)
        log.info("device: CPU (CUDA not used: %s)", reason)
    session = _new_session(source, path, cpu, _session_options(threads, 3))
    return session, session.get_providers()[0]


def _new_session(
    source: str | bytes, path: str, providers: list[str], options: ort.SessionOptions
) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(source, sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises Fail, InvalidGraph, NotImplemented...
        msg = (
            f"onnxruntime {ort.__version__} cannot load model {path}: {' '.join(str(exc).split())}; "
            "re-export it with an opset this onnxruntime supports"
        )
        raise ModelError(msg) from exc
