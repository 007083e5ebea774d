"""Reading and routing a face-analysis model folder like insightface 0.7.3, and its errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from emo.faces.face_analysis import FaceAnalysis
from emo.faces.onnx_models import (
    load_models,
    models_folder,
    normalisation,
    read_graph_info,
    resolve_backend,
    route,
)
from tests.emo.faces.face_fixtures import backend_param, fixture_params, load, models_dir, require

# insightface's routed class for each task (the README table).
CLASSES = {"detection": "RetinaFace", "recognition": "ArcFaceONNX", "landmark_2d_106": "Landmark",
           "landmark_3d_68": "Landmark", "genderage": "Attribute"}


@pytest.mark.parametrize("folder", fixture_params())
def test_face_analysis_routing_and_normalisation_match_insightface(folder):
    config, _ = load(require(folder))
    models = load_models(models_dir(folder, config), backend="opencv")
    assert set(models) == set(config["models"])
    for task, expected in config["models"].items():
        model = models[task]
        assert model.path.name == expected["file"]
        assert model.kind == expected["routed_class"] == CLASSES[task]
        assert (model.input_mean, model.input_std) == (expected["input_mean"], expected["input_std"])
        assert model.input_name == expected["input_name"]
        assert list(model.output_names) == expected["output_names"]
        info = read_graph_info(model.path)
        assert list(info.first_node_names) == expected["first_node_names"]
    # The values insightface logs for the antelopev2 pack.
    assert (models["detection"].input_mean, models["detection"].input_std) == (127.5, 128.0)
    assert (models["recognition"].input_mean, models["recognition"].input_std) == (127.5, 127.5)
    for task in ("landmark_2d_106", "landmark_3d_68", "genderage"):
        assert (models[task].input_mean, models[task].input_std) == (0.0, 1.0)


@pytest.mark.parametrize("folder", fixture_params())
def test_face_analysis_graph_reader_matches_onnxruntime(folder):
    onnxruntime = pytest.importorskip("onnxruntime")
    config, _ = load(require(folder))
    for path in sorted(models_folder(models_dir(folder, config)).glob("*.onnx")):
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        info = read_graph_info(path)
        assert info.inputs == tuple((i.name, tuple(i.shape)) for i in session.get_inputs())
        assert info.outputs == tuple((o.name, tuple(o.shape)) for o in session.get_outputs())


def test_face_analysis_normalisation_heuristic():
    # mxnet-converted graphs normalise inside: Sub + Mul among the first 8 nodes, or bn_data early.
    assert normalisation("ArcFaceONNX", ["_minus0", "_mul0", "conv0"]) == (0.0, 1.0)
    assert normalisation("ArcFaceONNX", ["Sub_0", "Conv_1"]) == (127.5, 127.5)  # Sub alone is not enough
    assert normalisation("ArcFaceONNX", ["bn_data", "Conv_0"]) == (127.5, 127.5)  # bn_data: landmark/attribute only
    assert normalisation("Landmark", ["a", "b", "bn_data"]) == (0.0, 1.0)
    assert normalisation("Landmark", ["a", "b", "c", "bn_data"]) == (127.5, 128.0)  # not among the first three
    assert normalisation("Attribute", ["Conv_0"]) == (127.5, 128.0)
    assert normalisation("RetinaFace", ["Sub", "Mul"]) == (127.5, 128.0)


def test_face_analysis_route_by_shapes():
    from emo.faces.onnx_models import GraphInfo

    def graph(inputs, outputs):
        return GraphInfo(tuple(inputs), tuple(outputs), ())

    image = ("x", ("None", 3, 112, 112))
    assert route(graph([image], [(f"o{i}", ("?", 1)) for i in range(9)])) == ("RetinaFace", "detection")
    assert route(graph([image], [("fc1", ("None", 512))])) == ("ArcFaceONNX", "recognition")
    assert route(graph([("x", (1, 3, 192, 192))], [("fc1", (1, 212))])) == ("Landmark", "landmark_2d_106")
    assert route(graph([("x", (1, 3, 192, 192))], [("fc1", (1, 3309))])) == ("Landmark", "landmark_3d_68")
    assert route(graph([("x", (1, 3, 96, 96))], [("fc1", (1, 3))])) == ("Attribute", "genderage")
    assert route(graph([("x", (1, 3, 128, 128)), ("latent", (1, 512))], [("o", (1, 3, 128, 128))]))[1] is None
    assert route(graph([("x", (1, 3, 100, 100))], [("fc1", (1, 512))])) == (None, None)  # not a multiple of 16
    assert route(graph([("x", (1, 3, "h", "w"))], [("fc1", (1, 512))])) == (None, None)


@pytest.mark.parametrize("folder", fixture_params())
def test_face_analysis_accepts_the_face_analysis_folder_or_its_models_folder(folder):
    config, _ = load(require(folder))
    root = models_dir(folder, config)
    assert models_folder(root) == root / "models"
    assert models_folder(root / "models") == root / "models"
    assert set(load_models(root / "models", backend="opencv")) == set(load_models(root, backend="opencv"))


@pytest.mark.parametrize("folder", fixture_params())
def test_face_analysis_first_model_of_a_task_wins(folder, tmp_path):
    config, _ = load(require(folder))
    source = models_folder(models_dir(folder, config))
    for path in source.glob("*.onnx"):
        shutil.copy(path, tmp_path / path.name)
    shutil.copy(source / config["models"]["recognition"]["file"], tmp_path / "a_second_arcface.onnx")
    shutil.copy(source / config["models"]["recognition"]["file"], tmp_path / ".hidden_arcface.onnx")
    models = load_models(tmp_path, backend="opencv")
    assert models["recognition"].path.name == "a_second_arcface.onnx"  # sorted order; hidden files skipped


def test_face_analysis_missing_folder_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no folder at .*pretrained_models/face_analysis/models"):
        FaceAnalysis(tmp_path / "nowhere", backend="opencv")


@pytest.mark.parametrize("folder", fixture_params())
@pytest.mark.parametrize("missing, file", [("detection", "scrfd_10g_bnkps.onnx"), ("recognition", "glintr100.onnx")])
def test_face_analysis_missing_detector_or_recogniser_names_the_file(folder, missing, file, tmp_path):
    config, _ = load(require(folder))
    source = models_folder(models_dir(folder, config))
    (tmp_path / "models").mkdir()
    for task, model in config["models"].items():
        if task != missing:
            shutil.copy(source / model["file"], tmp_path / "models" / model["file"])
    with pytest.raises(FileNotFoundError) as error:
        FaceAnalysis(tmp_path, backend="opencv")
    message = str(error.value)
    assert file in message and "pretrained_models/face_analysis/models/" in message and missing in message


def test_face_analysis_damaged_model_file(tmp_path):
    (tmp_path / "scrfd_10g_bnkps.onnx").write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match="cannot read .*scrfd_10g_bnkps.onnx.* as an ONNX model"):
        load_models(tmp_path, backend="opencv")


def test_face_analysis_backend_choice(monkeypatch):
    from emo.faces import onnx_models

    assert resolve_backend("opencv") == "opencv"
    monkeypatch.setattr(onnx_models, "_onnxruntime_installed", lambda: True)
    assert resolve_backend("auto") == "onnxruntime"
    monkeypatch.setattr(onnx_models, "_onnxruntime_installed", lambda: False)
    assert resolve_backend("auto") == "opencv"  # OpenCV DNN is the fallback
    with pytest.raises(ValueError, match="onnxruntime is not installed"):
        resolve_backend("onnxruntime")
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        resolve_backend("cuda")


@pytest.mark.parametrize("folder", fixture_params())
@pytest.mark.parametrize("backend", ["onnxruntime", "opencv"])
def test_face_analysis_backends_return_outputs_in_graph_order(folder, backend):
    """OpenCV lists unconnected outputs alphabetically; we must get the graph's order."""
    backend_param(backend)
    config, _ = load(require(folder))
    detector = load_models(models_dir(folder, config), backend=backend)["detection"]
    outputs = detector.run(np.zeros((1, 3, 64, 64), np.float32))
    widths = [out.shape[-1] for out in outputs]
    assert widths == [shape[-1] for shape in detector.output_shapes] == [1, 1, 1, 4, 4, 4, 10, 10, 10]
    assert [out.shape[0] for out in outputs[:3]] == [(64 // s) ** 2 * 2 for s in (8, 16, 32)]
    detector.close()
    assert detector._session is None
