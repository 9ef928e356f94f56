"""What batchscore reads from an .onnx file, read from its protobuf wire format without the onnx package.

Importing ``onnx`` (and protobuf with it) costs about as much start-up as
numpy: more than a whole short run should. An ONNX model is a ``ModelProto``
message; this module walks its fields and keeps only what :class:`Model`
needs: opsets, producer, ``metadata_props``, graph inputs (less initializers)
and outputs with tensor types and shapes, each node's op type, inputs, outputs,
``classlabels_*`` attributes and an ``Imputer``'s replaced value, and the
``classes`` initializer. Big fields
(weights, tree attributes) are skipped by their length, unread.

Whatever it cannot describe exactly as ``onnx`` would raises :class:`NeedsOnnxError`,
and the caller reads the model with ``onnx`` instead: a ZipMap to cut out, an
input or output that is not a tensor, an element type without a plain numpy
dtype, a malformed file (``onnx`` then words the error).
"""

from __future__ import annotations

import math
import mmap
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Field numbers from onnx.proto (ModelProto, GraphProto, NodeProto, AttributeProto, ValueInfoProto,
# TypeProto, TensorShapeProto, TensorProto, OperatorSetIdProto, StringStringEntryProto).
_MODEL_PRODUCER_NAME, _MODEL_PRODUCER_VERSION, _MODEL_GRAPH, _MODEL_OPSET, _MODEL_METADATA = 2, 3, 7, 8, 14
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_INPUT, _GRAPH_OUTPUT = 1, 5, 11, 12
_NODE_INPUT, _NODE_OUTPUT, _NODE_OP_TYPE, _NODE_ATTRIBUTE = 1, 2, 4, 5
_ATTR_NAME, _ATTR_F, _ATTR_INTS, _ATTR_STRINGS = 1, 2, 8, 9
_TYPE_TENSOR, _TYPE_DENOTATION = 1, 6
_TENSOR_TYPE_ELEM, _TENSOR_TYPE_SHAPE = 1, 2
_SHAPE_DIM, _DIM_VALUE = 1, 1
_TENSOR_DIMS, _TENSOR_DATA_TYPE, _TENSOR_INT32_DATA, _TENSOR_STRING_DATA, _TENSOR_INT64_DATA = 1, 2, 5, 6, 7
_TENSOR_NAME, _TENSOR_RAW_DATA, _TENSOR_DATA_LOCATION = 8, 9, 14

ELEMENT_TYPES: dict[int, tuple[str, np.dtype[Any]]] = {
    1: ("float", np.dtype(np.float32)),
    2: ("uint8", np.dtype(np.uint8)),
    3: ("int8", np.dtype(np.int8)),
    4: ("uint16", np.dtype(np.uint16)),
    5: ("int16", np.dtype(np.int16)),
    6: ("int32", np.dtype(np.int32)),
    7: ("int64", np.dtype(np.int64)),
    8: ("string", np.dtype(object)),
    9: ("bool", np.dtype(np.bool_)),
    10: ("float16", np.dtype(np.float16)),
    11: ("double", np.dtype(np.float64)),
    12: ("uint32", np.dtype(np.uint32)),
    13: ("uint64", np.dtype(np.uint64)),
    14: ("complex64", np.dtype(np.complex64)),
    15: ("complex128", np.dtype(np.complex128)),
}
"""ONNX element types with a plain numpy dtype: (the name ``tensor(...)`` shows, the dtype)."""

LABEL_ATTRIBUTES = (b"classlabels_strings", b"classlabels_int64s", b"classlabels_ints")


class NeedsOnnxError(Exception):
    """This file needs the onnx package to be read (as it always was): not a fault of the file in itself."""


@dataclass(frozen=True)
class Value:
    """A graph input or output: its name, and for a tensor its element type and shape (None: no shape)."""

    name: str
    elem_type: int
    shape: tuple[int | None, ...] | None


@dataclass
class WireModel:
    """What :class:`batchscore.model.Model` reads from a file."""

    opsets: dict[str, int] = field(default_factory=dict)
    producer: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    inputs: list[Value] = field(default_factory=list)
    outputs: list[Value] = field(default_factory=list)
    class_labels: list[str] | list[int] | None = None
    has_zipmap: bool = False
    nodes: list[tuple[list[str], list[str]]] = field(default_factory=list)
    """Each node's inputs and outputs, in graph order."""
    nan_imputers: list[int] = field(default_factory=list)
    """Indices (in ``nodes``) of the Imputer nodes that replace NaN."""

    def imputed_inputs(self) -> frozenset[str]:
        """Graph inputs whose values flow into an Imputer that replaces NaN, through any nodes (Concat, Cast...)."""
        inputs = {i.name for i in self.inputs}
        producers = {out: node for node in self.nodes for out in node[1]}
        found: set[str] = set()
        for index in self.nan_imputers:
            seen: set[str] = set()
            stack = list(self.nodes[index][0])
            while stack:
                name = stack.pop()
                if name in seen:
                    continue
                seen.add(name)
                if name in inputs:
                    found.add(name)
                elif name in producers:
                    stack.extend(producers[name][0])
        return frozenset(found)


def read(path: str) -> WireModel:
    """Read ``path``'s model description; raises :class:`NeedsOnnxError` where the onnx package must do it."""
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _model(data)
    except (OSError, ValueError, IndexError, UnicodeDecodeError, struct.error) as exc:  # empty, truncated, garbled
        raise NeedsOnnxError(str(exc)) from exc


def parse(data: bytes) -> WireModel:
    """The same as :func:`read`, for a model already in memory (read from an object store)."""
    try:
        return _model(data)
    except (ValueError, IndexError, UnicodeDecodeError, struct.error) as exc:
        raise NeedsOnnxError(str(exc)) from exc


def _varint(data: Any, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise NeedsOnnxError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise NeedsOnnxError("varint too long")


def _fields(data: Any, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Each field of the message in ``data[start:end]``: (number, wire type, value or start, end)."""
    pos = start
    while pos < end:
        key, pos = _varint(data, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos, end)
            yield number, wire, value, pos
        elif wire == 2:
            length, pos = _varint(data, pos, end)
            if pos + length > end:
                raise NeedsOnnxError("field runs past its message")
            yield number, wire, pos, pos + length
            pos += length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if pos + size > end:
                raise NeedsOnnxError("field runs past its message")
            yield number, wire, pos, pos + size
            pos += size
        else:
            raise NeedsOnnxError(f"wire type {wire}")


def _text(data: Any, start: int, end: int) -> str:
    return bytes(data[start:end]).decode("utf-8")


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _ints(data: Any, wire: int, a: int, b: int) -> list[int]:
    """A repeated int64 field's values in one field: packed (wire type 2) or one (wire type 0)."""
    if wire == 0:
        return [_signed(a)]
    values = []
    pos = a
    while pos < b:
        value, pos = _varint(data, pos, b)
        values.append(_signed(value))
    return values


def _model(data: Any) -> WireModel:
    model = WireModel()
    end = len(data)
    producer = ["", ""]
    graph: tuple[int, int] | None = None
    for number, wire, a, b in _fields(data, 0, end):
        if wire != 2:
            continue
        if number == _MODEL_OPSET:
            domain, version = "", 0
            for n, w, x, y in _fields(data, a, b):
                if n == 1 and w == 2:
                    domain = _text(data, x, y)
                elif n == 2 and w == 0:
                    version = _signed(x)
            model.opsets[domain or "ai.onnx"] = version
        elif number in (_MODEL_PRODUCER_NAME, _MODEL_PRODUCER_VERSION):
            producer[number - _MODEL_PRODUCER_NAME] = _text(data, a, b)
        elif number == _MODEL_METADATA:
            entry = {n: _text(data, x, y) for n, w, x, y in _fields(data, a, b) if w == 2}
            if 1 in entry:
                model.metadata.setdefault(entry[1], entry.get(2, ""))
        elif number == _MODEL_GRAPH:
            graph = (a, b)
    if graph is None:
        raise NeedsOnnxError("no graph")
    model.producer = f"{producer[0]} {producer[1]}".strip()
    _graph(data, *graph, model)
    return model


def _graph(data: Any, start: int, end: int, model: WireModel) -> None:
    initializers: dict[str, tuple[int, int]] = {}
    inputs: list[Value] = []
    gathered: set[str] = set()
    for number, wire, a, b in _fields(data, start, end):
        if wire != 2:
            continue
        if number == _GRAPH_NODE:
            _node(data, a, b, model, gathered)
        elif number == _GRAPH_INITIALIZER:
            initializers.setdefault(_initializer_name(data, a, b), (a, b))
        elif number == _GRAPH_INPUT:
            inputs.append(_value(data, a, b))
        elif number == _GRAPH_OUTPUT:
            model.outputs.append(_value(data, a, b))
    model.inputs = [i for i in inputs if i.name not in initializers]
    if model.class_labels is None and "classes" in gathered and "classes" in initializers:
        model.class_labels = _classes(data, *initializers["classes"])


def _node(data: Any, start: int, end: int, model: WireModel, gathered: set[str]) -> None:
    op_type = ""
    inputs: list[str] = []
    outputs: list[str] = []
    attributes: list[tuple[int, int]] = []
    for number, wire, a, b in _fields(data, start, end):
        if wire != 2:
            continue
        if number == _NODE_OP_TYPE:
            op_type = _text(data, a, b)
        elif number == _NODE_INPUT:
            inputs.append(_text(data, a, b))
        elif number == _NODE_OUTPUT:
            outputs.append(_text(data, a, b))
        elif number == _NODE_ATTRIBUTE:
            attributes.append((a, b))
    model.nodes.append((inputs, outputs))
    if op_type == "ZipMap":
        model.has_zipmap = True
    if op_type == "ArrayFeatureExtractor" and inputs:
        gathered.add(inputs[0])
    if op_type == "Imputer" and math.isnan(_replaced_value(data, attributes)):
        model.nan_imputers.append(len(model.nodes) - 1)
    if model.class_labels is None:
        for a, b in attributes:
            labels = _labels(data, a, b)
            if labels is not None:
                model.class_labels = labels
                break


def _replaced_value(data: Any, attributes: list[tuple[int, int]]) -> float:
    """An Imputer's ``replaced_value_float`` (0.0, ONNX's default, when it has none)."""
    for start, end in attributes:
        name, value = b"", 0.0
        for number, wire, a, b in _fields(data, start, end):
            if number == _ATTR_NAME and wire == 2:
                name = bytes(data[a:b])
            elif number == _ATTR_F and wire == 5:
                value = struct.unpack("<f", bytes(data[a:b]))[0]
        if name == b"replaced_value_float":
            return value
    return 0.0


def _labels(data: Any, start: int, end: int) -> list[str] | list[int] | None:
    """An attribute's class labels, if it is a ``classlabels_*`` attribute."""
    name = b""
    ints: list[int] = []
    strings: list[str] = []
    for number, wire, a, b in _fields(data, start, end):
        if number == _ATTR_NAME and wire == 2:
            name = bytes(data[a:b])
            if name not in LABEL_ATTRIBUTES:
                return None
        elif number == _ATTR_INTS and wire in (0, 2):
            ints += _ints(data, wire, a, b)
        elif number == _ATTR_STRINGS and wire == 2:
            strings.append(_text(data, a, b))
    if name not in LABEL_ATTRIBUTES:
        return None
    return strings if name == b"classlabels_strings" else ints


def _initializer_name(data: Any, start: int, end: int) -> str:
    for number, wire, a, b in _fields(data, start, end):
        if number == _TENSOR_NAME and wire == 2:
            return _text(data, a, b)
    return ""


def _classes(data: Any, start: int, end: int) -> list[str] | list[int]:
    """The ``classes`` initializer's values (int64, int32 or strings), as ``numpy_helper.to_array`` reads them."""
    data_type = 0
    strings: list[str] = []
    ints: list[int] = []
    raw: bytes | None = None
    for number, wire, a, b in _fields(data, start, end):
        if number == _TENSOR_DATA_TYPE and wire == 0:
            data_type = a
        elif number == _TENSOR_STRING_DATA and wire == 2:
            strings.append(_text(data, a, b))
        elif number in (_TENSOR_INT64_DATA, _TENSOR_INT32_DATA) and wire in (0, 2):
            ints += _ints(data, wire, a, b)
        elif number == _TENSOR_RAW_DATA and wire == 2:
            raw = bytes(data[a:b])
        elif number == _TENSOR_DATA_LOCATION and wire == 0 and a != 0:
            raise NeedsOnnxError("classes stored outside the file")
    if data_type == 8:
        return strings
    if data_type not in (6, 7):
        raise NeedsOnnxError(f"classes of element type {data_type}")
    if raw is not None:
        return [int(v) for v in np.frombuffer(raw, dtype="<i8" if data_type == 7 else "<i4")]
    return ints  # int32_data holds int32 values as the varints of their sign-extended int64


def _value(data: Any, start: int, end: int) -> Value:
    """A ValueInfoProto that holds a tensor type with a numpy dtype."""
    name = ""
    type_span: tuple[int, int] | None = None
    for number, wire, a, b in _fields(data, start, end):
        if number == 1 and wire == 2:
            name = _text(data, a, b)
        elif number == 2 and wire == 2:
            type_span = (a, b)
    tensor: tuple[int, int] | None = None
    if type_span is not None:
        for number, wire, a, b in _fields(data, *type_span):
            if number == _TYPE_TENSOR and wire == 2:
                tensor = (a, b)
            elif number != _TYPE_DENOTATION:
                raise NeedsOnnxError(f"{name} is not a tensor")
    if tensor is None:
        raise NeedsOnnxError(f"{name} has no tensor type")
    elem_type = 0
    shape: tuple[int | None, ...] | None = None
    for number, wire, a, b in _fields(data, *tensor):
        if number == _TENSOR_TYPE_ELEM and wire == 0:
            elem_type = a
        elif number == _TENSOR_TYPE_SHAPE and wire == 2:
            shape = tuple(_dim(data, x, y) for n, w, x, y in _fields(data, a, b) if n == _SHAPE_DIM and w == 2)
    if elem_type not in ELEMENT_TYPES:
        raise NeedsOnnxError(f"{name} has element type {elem_type}")
    return Value(name, elem_type, shape)


def _dim(data: Any, start: int, end: int) -> int | None:
    value: int | None = None
    for number, wire, a, _ in _fields(data, start, end):
        if number == _DIM_VALUE and wire == 0:
            value = _signed(a)
    return value
