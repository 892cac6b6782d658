"""Just enough of the ONNX protobuf format to write a model file, so serving needs onnxruntime and
not the `onnx` package (and its protobuf schema) to derive a graph from a loaded artifact.

Only what model/onnx_graph.py writes is covered: tensors as raw little-endian bytes, nodes with
int/float/string/int-list attributes, inputs and outputs with symbolic dimensions. Field numbers are
those of onnx/onnx.proto (stable since IR version 3); the result is read by onnxruntime, which
checks it against the operator schemas when it builds a session.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

# TensorProto.DataType
FLOAT, INT32, INT64, BOOL, FLOAT16 = 1, 6, 7, 9, 10
_DTYPES = {
    np.dtype(np.float32): FLOAT,
    np.dtype(np.int32): INT32,
    np.dtype(np.int64): INT64,
    np.dtype(np.bool_): BOOL,
    np.dtype(np.float16): FLOAT16,
}
# AttributeProto.AttributeType
_A_FLOAT, _A_INT, _A_STRING, _A_INTS = 1, 2, 3, 7

Attr = int | float | str | Sequence[int]


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64 as two's complement, as protobuf does
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _int(field: int, n: int) -> bytes:
    return _varint(field << 3) + _varint(n)


def _bytes(field: int, data: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _str(field: int, text: str) -> bytes:
    return _bytes(field, text.encode())


def _float(field: int, x: float) -> bytes:
    return _varint(field << 3 | 5) + struct.pack("<f", x)


def tensor(name: str, array: np.ndarray) -> bytes:
    """A TensorProto (raw little-endian data)."""
    a = np.ascontiguousarray(array)
    if a.dtype not in _DTYPES:
        raise TypeError(f"{name}: dtype {a.dtype} is not supported")
    dims = b"".join(_int(1, d) for d in a.shape)
    raw = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
    return dims + _int(2, _DTYPES[a.dtype]) + _str(8, name) + _bytes(9, raw)


def _attribute(name: str, value: Attr) -> bytes:
    if isinstance(value, bool | int):
        return _str(1, name) + _int(20, _A_INT) + _int(3, int(value))
    if isinstance(value, float):
        return _str(1, name) + _int(20, _A_FLOAT) + _float(2, value)
    if isinstance(value, str):
        return _str(1, name) + _int(20, _A_STRING) + _bytes(4, value.encode())
    return _str(1, name) + _int(20, _A_INTS) + b"".join(_int(8, int(v)) for v in value)


def node(op: str, inputs: Sequence[str], outputs: Sequence[str], **attrs: Attr) -> bytes:
    """A NodeProto; an empty input name is an omitted optional input."""
    body = b"".join(_str(1, i) for i in inputs) + b"".join(_str(2, o) for o in outputs)
    body += _str(3, f"{op}_{outputs[0]}") + _str(4, op)
    return body + b"".join(_bytes(5, _attribute(k, v)) for k, v in attrs.items())


def value_info(name: str, elem_type: int, dims: Sequence[int | str]) -> bytes:
    """A ValueInfoProto: a graph input or output; a str dimension is symbolic ("batch")."""
    shape = b"".join(_bytes(1, _int(1, d) if isinstance(d, int) else _str(2, d)) for d in dims)
    tensor_type = _int(1, elem_type) + _bytes(2, shape)
    return _str(1, name) + _bytes(2, _bytes(1, tensor_type))


def model(
    nodes: Sequence[bytes],
    initializers: Sequence[bytes],
    inputs: Sequence[bytes],
    outputs: Sequence[bytes],
    *,
    name: str,
    opset: int,
    ir_version: int = 8,
    producer: str = "sentiment-service",
) -> bytes:
    """A serialised ModelProto of one graph in the default (ai.onnx) domain."""
    graph = b"".join(_bytes(1, n) for n in nodes) + _str(2, name)
    graph += b"".join(_bytes(5, t) for t in initializers)
    graph += b"".join(_bytes(11, v) for v in inputs) + b"".join(_bytes(12, v) for v in outputs)
    opset_id = _str(1, "") + _int(2, opset)
    return _int(1, ir_version) + _str(2, producer) + _bytes(7, graph) + _bytes(8, opset_id)
