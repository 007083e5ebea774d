"""Hand-made ONNX models for the vocal separation tests, written without the `onnx` package.

An ONNX file is one protobuf `ModelProto` message; the few fields these models need are encoded
here directly (field numbers from onnx/onnx.proto). ONNX Runtime refuses a malformed file, so a
mistake here fails the tests loudly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import numpy as np

_FLOAT = 1  # TensorProto.DataType.FLOAT


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _message(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _text(field: int, value: str) -> bytes:
    return _message(field, value.encode())


def tensor(name: str, array: np.ndarray) -> bytes:
    """TensorProto: dims 1, data_type 2, name 8, raw_data 9 (little-endian float32)."""
    array = np.ascontiguousarray(array, dtype="<f4")
    dims = b"".join(_int(1, d) for d in array.shape)
    return dims + _int(2, _FLOAT) + _text(8, name) + _message(9, array.tobytes())


def value_info(name: str, shape: Sequence[Union[int, str]]) -> bytes:
    """ValueInfoProto (name 1, type 2) of a float tensor; a str dimension is symbolic."""
    dims = b"".join(_message(1, _int(1, d) if isinstance(d, int) else _text(2, d)) for d in shape)
    tensor_type = _int(1, _FLOAT) + _message(2, dims)  # TypeProto.Tensor: elem_type 1, shape 2
    return _text(1, name) + _message(2, _message(1, tensor_type))


def node(op_type: str, inputs: Sequence[str], outputs: Sequence[str]) -> bytes:
    """NodeProto: input 1, output 2, op_type 4 (no attributes)."""
    return b"".join(_text(1, i) for i in inputs) + b"".join(_text(2, o) for o in outputs) + _text(4, op_type)


def write_model(path: Path, nodes: Sequence[bytes], inputs: Sequence[bytes], outputs: Sequence[bytes],
                initializers: Sequence[bytes] = (), opset: int = 13) -> Path:
    """ModelProto (ir_version 1, producer_name 2, graph 7, opset_import 8) with one GraphProto
    (node 1, name 2, initializer 5, input 11, output 12)."""
    graph = (b"".join(_message(1, n) for n in nodes) + _text(2, "test_graph")
             + b"".join(_message(5, t) for t in initializers)
             + b"".join(_message(11, i) for i in inputs) + b"".join(_message(12, o) for o in outputs))
    model = (_int(1, 7) + _text(2, "emo-tests") + _message(7, graph)
             + _message(8, _text(1, "") + _int(2, opset)))
    Path(path).write_bytes(model)
    return Path(path)


def band_mask_model(path: Path, dim_f: int, dim_t: int, keep: tuple[int, int]) -> Path:
    """input [batch, 4, dim_f, dim_t] -> the same with every frequency bin outside
    [keep[0], keep[1]) set to zero (Mul by a [1, 1, dim_f, 1] mask)."""
    mask = np.zeros((1, 1, dim_f, 1), dtype=np.float32)
    mask[:, :, keep[0]:keep[1]] = 1
    shape = ["batch", 4, dim_f, dim_t]
    return write_model(path, [node("Mul", ["input", "mask"], ["output"])],
                       [value_info("input", shape)], [value_info("output", shape)], [tensor("mask", mask)])


def single_op_model(path: Path, op_type: str, shape: Sequence[Union[int, str]]) -> Path:
    """input -> op_type(input) -> output (a one-input operator that keeps the shape), declared `shape`."""
    return write_model(path, [node(op_type, ["input"], ["output"])],
                       [value_info("input", shape)], [value_info("output", shape)])


def identity_model(path: Path, shape: Sequence[Union[int, str]]) -> Path:
    """input -> output unchanged, with the declared shape `shape`."""
    return single_op_model(path, "Identity", shape)
