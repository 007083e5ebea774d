"""Read numeric arrays from a joblib pickle without trusting the pickle.

The `mtcnn` wheel stores its weights as `joblib.dump(list_of_arrays, compress="lz4")`. Such a
file is an LZ4 frame around a pickle (protocol 4) in which every array is a
`joblib.numpy_pickle.NumpyArrayWrapper` object (its state: `subclass`, `shape`, `order`,
`dtype`, `allow_mmap`, `numpy_array_alignment_bytes`). The array's bytes are not in the pickle:
joblib writes them straight after the wrapper's BUILD opcode, preceded by one byte giving the
length of an alignment padding and that padding, and its unpickler reads them there when it
builds the wrapper.

This reader follows that layout with Python's own pickle machine, restricted: the only globals
it resolves are the wrapper (replaced by a local placeholder, so joblib is never imported),
`numpy.ndarray` and `numpy.dtype`. Any other global (`os.system`, `builtins.eval`, a joblib
class other than the wrapper...) stops the load with `JoblibArrayError`, and so do object
arrays, non-numeric dtypes and truncated data.
"""

from __future__ import annotations

import io
import math
import pickle
from pathlib import Path

import numpy as np

LZ4_FRAME_MAGIC = b"\x04\x22\x4d\x18"  # LZ4 frame format, little-endian 0x184D2204
PICKLE_PROTOCOL_OPCODE = pickle.PROTO  # b"\x80": every protocol >= 2 pickle starts with it


class JoblibArrayError(ValueError):
    """The file is not a joblib pickle of plain numeric arrays (or it is damaged)."""


class _ArrayHeader:
    """Stands in for joblib's NumpyArrayWrapper: holds the array description from the pickle."""


_ALLOWED_GLOBALS = {
    ("joblib.numpy_pickle", "NumpyArrayWrapper"): _ArrayHeader,
    ("numpy", "ndarray"): np.ndarray,  # the wrapper's `subclass` field; never called
    ("numpy", "dtype"): np.dtype,  # dtypes are pickled as a call numpy.dtype("f4", False, True)
}


def _read_array(header: _ArrayHeader, read) -> np.ndarray:
    """The array that `header` describes, from the bytes that follow it in the stream."""
    state = vars(header)
    dtype, shape, order = state.get("dtype"), state.get("shape"), state.get("order", "C")
    if state.get("subclass", np.ndarray) is not np.ndarray:
        raise JoblibArrayError(f"array of a numpy subclass {state.get('subclass')!r}; only plain arrays are read")
    if not isinstance(dtype, np.dtype) or dtype.hasobject or dtype.kind not in "fiub":
        raise JoblibArrayError(f"array of dtype {dtype!r}; only numeric arrays are read")
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise JoblibArrayError(f"array with an invalid shape {shape!r}")
    if order not in ("C", "F"):
        raise JoblibArrayError(f"array with an unknown memory order {order!r}")
    if state.get("numpy_array_alignment_bytes") is not None:
        # joblib >= 1.2: one byte gives the padding length, then that many padding bytes.
        padding = read(1)
        if len(padding) != 1 or len(read(padding[0])) != padding[0]:
            raise JoblibArrayError("the data ends inside an array's alignment padding")
    count = math.prod(shape)  # Python ints: an absurd shape cannot overflow into a small read
    data = read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise JoblibArrayError(
            f"the data ends inside an array of shape {shape} (got {len(data)} of {count * dtype.itemsize} bytes)"
        )
    array = np.frombuffer(data, dtype=dtype, count=count)
    array = array.reshape(shape[::-1]).T if order == "F" else array.reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)  # native byte order, writable


class _RestrictedUnpickler(pickle._Unpickler):  # the pure-Python machine: its opcodes can be hooked
    """Python's pickle machine with a whitelist of globals and joblib's array layout."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise JoblibArrayError(
                f"the pickle refers to {module}.{name}, which is not a numpy array part; refused"
            ) from None

    def _load_build(self):
        pickle._Unpickler.load_build(self)
        if isinstance(self.stack[-1], _ArrayHeader):
            # `self.read` reads through pickle's frame buffer and, once a frame is used up, from
            # the file itself: the array bytes sit between two frames, where joblib wrote them.
            self.stack[-1] = _read_array(self.stack[-1], self.read)

    dispatch = pickle._Unpickler.dispatch.copy()
    dispatch[pickle.BUILD[0]] = _load_build


def decompress(raw: bytes) -> bytes:
    """The pickle bytes of a joblib file: LZ4-framed (what `mtcnn` ships) or uncompressed."""
    if raw.startswith(LZ4_FRAME_MAGIC):
        try:
            import lz4.frame
        except ImportError:
            raise JoblibArrayError(
                "the file is LZ4-compressed and the lz4 package is not installed (pip install lz4)"
            ) from None
        try:
            return lz4.frame.decompress(raw)
        except RuntimeError as error:  # lz4 reports damaged frames as RuntimeError
            raise JoblibArrayError(f"the LZ4 data is damaged ({error})") from None
    if raw.startswith(PICKLE_PROTOCOL_OPCODE):
        return raw
    raise JoblibArrayError(
        f"not a joblib file: it starts with {raw[:4]!r}, neither an LZ4 frame nor a pickle"
    )


def read_joblib_arrays(path: str | Path) -> list[np.ndarray]:
    """The list of numeric arrays stored in a joblib file at `path` (`joblib.dump([a, b, ...])`).

    Raises FileNotFoundError when the file is missing and JoblibArrayError (a ValueError) when
    it is not a joblib list of plain numeric arrays: damaged, truncated, compressed with another
    codec, or referring to any class beyond numpy arrays and dtypes.
    """
    path = Path(path)
    data = decompress(path.read_bytes())
    try:
        loaded = _RestrictedUnpickler(io.BytesIO(data)).load()
    except JoblibArrayError:
        raise
    except (pickle.UnpicklingError, EOFError, IndexError, KeyError, TypeError, ValueError, AttributeError) as error:
        # Anything a malformed stream makes the pickle machine raise.
        raise JoblibArrayError(f"the pickle is damaged ({type(error).__name__}: {error})") from None
    if not isinstance(loaded, list) or not all(isinstance(item, np.ndarray) for item in loaded):
        raise JoblibArrayError(f"expected a list of arrays, got {type(loaded).__name__}")
    # An array can also be built by calling numpy.ndarray directly; only numeric ones pass.
    odd = [str(item.dtype) for item in loaded if type(item) is not np.ndarray or item.dtype.kind not in "fiub"]
    if odd:
        raise JoblibArrayError(f"the file holds arrays of dtype {', '.join(odd)}; only numeric arrays are read")
    return loaded
