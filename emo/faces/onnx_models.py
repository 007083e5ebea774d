"""A user's insightface model folder (Hallo's `pretrained_models/face_analysis/models`), read and
routed exactly as insightface 0.7.3 does it, and run with onnxruntime or OpenCV's DNN module.

Routing (insightface 0.7.3 `model_zoo.ModelRouter`, files in sorted name order, the first model of
each task wins): >= 5 outputs -> detector; a 192x192 input -> landmarks (3309 outputs: 3-D 68
points, else 2-D outputs/2 points); 96x96 -> attributes (3 outputs: gender/age); 2 inputs at
128x128 -> face swapper (no task in 0.7.3, ignored here); a square input >= 112 and a multiple of 16
-> recognition (ArcFace). The input normalisation follows insightface too: the detector uses
(x - 127.5) / 128; the others look at the names of the graph's first 8 nodes: a `Sub`/`_minus`
node together with a `Mul`/`_mul` node, or a `bn_data` node among the first three (landmark and
attribute models only), means the network normalises inside, so it takes raw pixels (mean 0,
std 1); otherwise ArcFace uses (x - 127.5) / 127.5 and the landmark/attribute models
(x - 127.5) / 128.

The graph facts (inputs, outputs, first node names) are read from the file's protobuf header with
a small reader below, so routing needs neither the `onnx` package nor a runtime session, and the
weights are never read for it (the file is memory-mapped; the initialisers are skipped).

Runtime choice, measured on the face-analysis fixture (tiny random antelopev2-shaped models,
3 photos, 7 faces; this 2-core machine):
- onnxruntime (1.32.0) is what insightface runs. Against the stored outputs (onnxruntime 1.18 on
  the generator's CPU): detector scores <= 7e-7, boxes/keypoints <= 3e-5 px, embedding of a stored
  crop <= 5e-7 relative, Hallo's embedding end to end <= 5e-7 (other faces <= 1.2e-4, where a
  last-bit keypoint change moves a crop value), 106 landmarks <= 6e-5 px. It is an optional extra
  (`pip install comfyui-emo[hallo]` gives the CPU build); ComfyUI users with `onnxruntime-gpu`
  have the same module, used as is. Sessions run on the CPU unless `providers` says otherwise: a
  portrait is one detector and one recogniser pass, and the CPU keeps the reference arithmetic.
- OpenCV DNN (`cv2.dnn.readNetFromONNX`, already a dependency) is the fallback: scores <= 1.1e-6,
  boxes/keypoints <= 6e-5 px, embedding of a stored crop <= 5e-7, end to end <= 2.1e-4, the same
  faces and choice. Outputs are fetched by the graph's output names in graph order, because
  `getUnconnectedOutLayersNames()` lists them alphabetically. The fixture proves only the tiny
  models' op types; that OpenCV runs the real antelopev2 graphs is not proven here.
- Speed on the tiny models was a wash on this loaded machine (detector network 27-58 ms with
  onnxruntime, ~65 ms with OpenCV); the real models' speed was not measurable here.
`backend="auto"` picks onnxruntime when it can be imported, else OpenCV.
"""

from __future__ import annotations

import glob
import importlib.util
import logging
import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "opencv")

# The antelopev2 file that fills each task in a Hallo download (for error messages only: routing
# goes by the graph's shapes, like insightface).
ANTELOPE_FILES = {
    "detection": "scrfd_10g_bnkps.onnx",
    "recognition": "glintr100.onnx",
    "landmark_2d_106": "2d106det.onnx",
    "landmark_3d_68": "1k3d68.onnx",
    "genderage": "genderage.onnx",
}
HALLO_FOLDER_HINT = "pretrained_models/face_analysis/models/ of a Hallo download"


# ---------------------------------------------------------------------------------------------
# A minimal protobuf reader for the parts of an ONNX ModelProto that routing needs.
# Field numbers from onnx.proto: ModelProto.graph = 7; GraphProto.node = 1, initializer = 5,
# input = 11, output = 12; NodeProto.name = 3, op_type = 4; TensorProto.name = 8;
# ValueInfoProto.name = 1, type = 2; TypeProto.tensor_type = 1; TypeProto.Tensor.shape = 2;
# TensorShapeProto.dim = 1; Dimension.dim_value = 1, dim_param = 2.

def _varint(buf, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(buf, start: int, end: int):
    """Yield (field_number, wire_type, value) over one message; a length-delimited value is the
    (start, end) span of its bytes, so large payloads (weights) are skipped, not copied."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = None, pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = (pos, pos + length), pos + length
        elif wire == 5:
            value, pos = None, pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > end:
            raise ValueError("truncated protobuf message")
        yield number, wire, value


def _text(buf, span) -> str:
    return bytes(buf[span[0]:span[1]]).decode("utf-8", "replace")


def _first(buf, span, number: int):
    for n, wire, value in _fields(buf, *span):
        if n == number and wire == 2:
            return value
    return None


def _value_info(buf, span) -> tuple[str, tuple]:
    """(name, shape) of a ValueInfoProto; a dimension is an int (dim_value), a str (dim_param) or
    None (neither), as onnxruntime reports it."""
    name, shape = "", ()
    for n, wire, value in _fields(buf, *span):
        if n == 1 and wire == 2:
            name = _text(buf, value)
        elif n == 2 and wire == 2:
            tensor = _first(buf, value, 1)
            shape_span = _first(buf, tensor, 2) if tensor else None
            if shape_span:
                dims = []
                for dn, dwire, dim in _fields(buf, *shape_span):
                    if dn != 1 or dwire != 2:
                        continue
                    entry = None
                    for fn, fwire, fvalue in _fields(buf, *dim):
                        if fn == 1 and fwire == 0:
                            entry = fvalue - (1 << 64) if fvalue >= 1 << 63 else fvalue
                        elif fn == 2 and fwire == 2:
                            entry = _text(buf, fvalue)
                    dims.append(entry)
                shape = tuple(dims)
    return name, shape


@dataclass(frozen=True)
class GraphInfo:
    """What routing needs from an ONNX file. `inputs` excludes initialisers (old IR versions list
    weights as graph inputs; onnxruntime's `get_inputs()` leaves them out, and so do we)."""

    inputs: tuple[tuple[str, tuple], ...]
    outputs: tuple[tuple[str, tuple], ...]
    first_node_names: tuple[str, ...]


def read_graph_info(path: str | os.PathLike) -> GraphInfo:
    """Inputs, outputs (name, shape) and the first 8 node names of an ONNX file."""
    path = Path(path)
    try:
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            graph = None
            for n, wire, value in _fields(buf, 0, len(buf)):
                if n == 7 and wire == 2:
                    graph = value
            if graph is None:
                raise ValueError("no graph in the file")
            nodes, initialisers, inputs, outputs = [], set(), [], []
            for n, wire, value in _fields(buf, *graph):
                if wire != 2:
                    continue
                if n == 1 and len(nodes) < 8:
                    name_span = _first(buf, value, 3)
                    nodes.append(_text(buf, name_span) if name_span else "")
                elif n == 5:
                    name_span = _first(buf, value, 8)
                    if name_span:
                        initialisers.add(_text(buf, name_span))
                elif n == 11:
                    inputs.append(_value_info(buf, value))
                elif n == 12:
                    outputs.append(_value_info(buf, value))
    except (ValueError, IndexError, OSError) as error:
        raise ValueError(
            f"face analysis: cannot read '{path}' as an ONNX model ({error}); the file is damaged or not "
            "ONNX: download it again"
        ) from error
    inputs = tuple(item for item in inputs if item[0] not in initialisers)
    return GraphInfo(inputs, tuple(outputs), tuple(nodes))


# ---------------------------------------------------------------------------------------------
# Routing and normalisation, as insightface 0.7.3.

def route(info: GraphInfo) -> tuple[Optional[str], Optional[str]]:
    """(insightface class, task) for a graph, or (None, None) when insightface would not recognise
    it. The swapper has no task in insightface 0.7.3, so it gets (\"INSwapper\", None)."""
    if not info.inputs or not info.outputs:
        return None, None
    shape = info.inputs[0][1]
    size = tuple(shape[2:4]) if len(shape) >= 4 else (None, None)
    if len(info.outputs) >= 5:
        return "RetinaFace", "detection"
    if size == (192, 192):
        width = info.outputs[0][1][1] if len(info.outputs[0][1]) > 1 else None
        if width == 3309:
            return "Landmark", "landmark_3d_68"
        if not isinstance(width, int):
            return None, None
        return "Landmark", f"landmark_2d_{width // 2}"
    if size == (96, 96):
        width = info.outputs[0][1][1] if len(info.outputs[0][1]) > 1 else None
        return "Attribute", "genderage" if width == 3 else f"attribute_{width}"
    if len(info.inputs) == 2 and size == (128, 128):
        return "INSwapper", None
    h, w = size
    if isinstance(h, int) and h == w and h >= 112 and h % 16 == 0:
        return "ArcFaceONNX", "recognition"
    return None, None


def normalisation(kind: str, first_node_names) -> tuple[float, float]:
    """(mean, std) insightface 0.7.3 applies to the input pixels of a model of class `kind`."""
    if kind == "RetinaFace":
        return 127.5, 128.0
    if kind == "INSwapper":
        return 0.0, 255.0
    names = list(first_node_names)[:8]
    has_sub = any(name.startswith(("Sub", "_minus")) for name in names)
    has_mul = any(name.startswith(("Mul", "_mul")) for name in names)
    if kind in ("Landmark", "Attribute") and "bn_data" in names[:3]:
        has_sub = has_mul = True
    if has_sub and has_mul:
        return 0.0, 1.0
    return (127.5, 127.5) if kind == "ArcFaceONNX" else (127.5, 128.0)


def _onnxruntime_installed() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def resolve_backend(backend: str) -> str:
    """"auto" -> "onnxruntime" when it can be imported, else "opencv"; others are checked."""
    if backend not in BACKENDS:
        raise ValueError(f"face analysis: unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "onnxruntime" if _onnxruntime_installed() else "opencv"
    if backend == "onnxruntime" and not _onnxruntime_installed():
        raise ValueError(
            "face analysis: backend 'onnxruntime' was asked for but onnxruntime is not installed: "
            "pip install onnxruntime (or onnxruntime-gpu), or use backend='opencv'"
        )
    return backend


@dataclass
class FaceModel:
    """One routed ONNX file. The runtime session is made on the first `run` and dropped by `close`.

    `input_shape` and the output shapes are as the graph declares them (ints, or str for dynamic
    axes). `run(blob)` takes a float32 NCHW blob and returns the outputs in graph order.
    """

    path: Path
    kind: str
    task: str
    input_name: str
    input_shape: tuple
    output_names: tuple[str, ...]
    output_shapes: tuple[tuple, ...]
    input_mean: float
    input_std: float
    backend: str
    providers: Optional[tuple[str, ...]] = None
    _session: object = field(default=None, repr=False)

    @property
    def input_size(self) -> Optional[tuple[int, int]]:
        """(width, height) of a static input, None when the graph leaves them dynamic."""
        h, w = self.input_shape[2:4]
        return (w, h) if isinstance(h, int) and isinstance(w, int) else None

    def run(self, blob: np.ndarray) -> list[np.ndarray]:
        if self._session is None:
            self._session = self._open()
        blob = np.ascontiguousarray(blob, dtype=np.float32)
        if self.backend == "onnxruntime":
            return list(self._session.run(list(self.output_names), {self.input_name: blob}))
        self._session.setInput(blob, self.input_name)
        # By name, in graph order: OpenCV would list unconnected outputs alphabetically.
        return [np.asarray(out) for out in self._session.forward(list(self.output_names))]

    def _open(self):
        logger.info("face analysis: loading %s (%s, %s)", self.path.name, self.task, self.backend)
        if self.backend == "onnxruntime":
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.log_severity_level = 3
            providers = list(self.providers or ("CPUExecutionProvider",))
            return onnxruntime.InferenceSession(str(self.path), sess_options=options, providers=providers)
        import cv2

        return cv2.dnn.readNetFromONNX(str(self.path))

    def close(self) -> None:
        self._session = None


def models_folder(folder: str | os.PathLike) -> Path:
    """The folder that holds the .onnx files: `<folder>/models` when it exists (Hallo's
    `face_analysis` folder, which insightface reads as root/models/), else `folder` itself."""
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise FileNotFoundError(
            f"face analysis: no folder at '{folder}'; give the face_analysis folder of a Hallo download "
            f"(its models/ subfolder holds {ANTELOPE_FILES['detection']} and {ANTELOPE_FILES['recognition']}, "
            f"from insightface's antelopev2 pack), i.e. {HALLO_FOLDER_HINT}"
        )
    if not folder.is_dir():
        raise ValueError(f"face analysis: '{folder}' is a file; give the folder that holds the .onnx models")
    return folder / "models" if (folder / "models").is_dir() else folder


def load_models(folder: str | os.PathLike, backend: str = "auto",
                providers=None) -> dict[str, FaceModel]:
    """Route every `*.onnx` of the model folder like insightface 0.7.3: {task: FaceModel}.

    Nothing is run or loaded into a runtime here. Unrecognised files and later duplicates of a
    task are skipped (logged), as insightface does.
    """
    backend = resolve_backend(backend)
    folder = models_folder(folder)
    models: dict[str, FaceModel] = {}
    # glob.glob (not Path.glob): like insightface it skips hidden files; sorted by path.
    for path in sorted(glob.glob(os.path.join(glob.escape(str(folder)), "*.onnx"))):
        path = Path(path)
        info = read_graph_info(path)
        kind, task = route(info)
        if task is None:
            logger.info("face analysis: %s not used (%s)", path.name, kind or "not a recognised model")
            continue
        if task in models:
            logger.info("face analysis: %s skipped, %s already comes from %s", path.name, task,
                        models[task].path.name)
            continue
        mean, std = normalisation(kind, info.first_node_names)
        models[task] = FaceModel(
            path=path, kind=kind, task=task, input_name=info.inputs[0][0], input_shape=info.inputs[0][1],
            output_names=tuple(name for name, _ in info.outputs),
            output_shapes=tuple(shape for _, shape in info.outputs), input_mean=mean, input_std=std,
            backend=backend, providers=tuple(providers) if providers else None)
        logger.info("face analysis: %s -> %s (mean %s, std %s)", path.name, task, mean, std)
    return models


def require(models: dict[str, FaceModel], task: str, folder) -> FaceModel:
    """The model for `task`, or a FileNotFoundError naming the file a Hallo download has there."""
    if task in models:
        return models[task]
    found = ", ".join(sorted(model.path.name for model in models.values())) or "no usable .onnx file"
    raise FileNotFoundError(
        f"face analysis: no {task} model in '{models_folder(folder)}' (found: {found}); it is "
        f"{ANTELOPE_FILES.get(task, 'an insightface model')} from insightface's antelopev2 pack, which "
        f"goes in {HALLO_FOLDER_HINT}"
    )
