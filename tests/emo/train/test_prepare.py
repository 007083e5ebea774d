"""`emo prepare`: a complete dataset from synthetic videos, bad videos skipped with reasons, resumable,
and the parts it is built from (frame-rate resampling, tracking, head speed, speed buckets)."""

from __future__ import annotations

import json
import math
import shutil

import cv2
import numpy as np
import pytest
import torch

from emo.audio import encode_audio
from emo.cli import main
from emo.data import layout, tracking
from emo.data.decode import iter_frames, probe
from emo.data.head_speed import (
    BoxMotionSpeed,
    FaceAlignSpeed,
    compute_speed_buckets,
    get_speed_estimator,
)
from emo.data.prepare import PrepareOptions, prepare_dataset
from emo.video import write_video
from tests.emo.train.conftest import FPS, SIZE
from tests.emo.train.media import astronaut_head
from tests.helpers import sine


def _files(root):
    return {p.relative_to(root).as_posix(): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_prepare_output_is_complete(prepared, video_folder, tiny_model):
    _, expected = video_folder
    records = layout.read_manifest(prepared)
    assert set(records) == set(expected)
    for source, outcome in expected.items():
        record = records[source]
        if outcome == "ok":
            assert record["status"] == "ok", record
        else:
            assert record["status"] == "skipped" and outcome in record["reason"], record

    info = json.loads((prepared / layout.DATASET_FILE).read_text())
    assert (info["fps"], info["size"], info["store"], info["speed_estimator"]) == (FPS, SIZE, "both", "face-align")
    buckets = info["speed_buckets"]
    assert len(buckets["centers"]) == len(tiny_model.config.speed.bucket_centers)
    assert buckets["centers"] == sorted(buckets["centers"]) and min(buckets["radii"]) > 0

    dataset = layout.open_dataset(prepared)
    assert [c.source for c in dataset.clips] == ["more/sing.webm", "talk.mp4"]
    layers, hidden = tiny_model.config.audio.num_layers, tiny_model.config.audio.hidden_size
    for clip in dataset.clips:
        n = clip.num_frames
        assert n == 2 * FPS  # 2 s at the dataset's rate, whatever the source's (25 and 30 fps)
        shapes = {name: dataset.array(clip, name).shape for name in layout.ARRAYS}
        assert shapes == {"frames": (n, SIZE, SIZE, 3), "latents": (n, 4, SIZE // 8, SIZE // 8), "boxes": (n, 4),
                          "speed": (n,), "audio": (n, layers, hidden), "waveform": (n * 1600,)}
        boxes = np.asarray(dataset.array(clip, "boxes"))
        width = boxes[:, 2] - boxes[:, 0]
        assert (boxes >= 0).all() and (boxes <= SIZE).all() and (width > SIZE / 4).all()  # a face, cropped around
        assert np.isfinite(dataset.array(clip, "speed")).all()

    speeds = {c.source: float(np.mean(dataset.array(c, "speed"))) for c in dataset.clips}
    assert speeds["more/sing.webm"] > 1.3 * speeds["talk.mp4"]  # it sways and rolls further per second


def test_audio_is_in_sync_and_encoded_per_frame(prepared, tiny_model):
    dataset = layout.open_dataset(prepared)
    clip = next(c for c in dataset.clips if c.source == "talk.mp4")
    stored = np.asarray(dataset.array(clip, "waveform"))
    original = sine(2.0, 16000, freq=200, seed=0)[0].numpy()  # what the test video was written with
    lags = np.arange(-400, 401)
    scores = [np.dot(stored[400:-400], original[400 + lag:len(original) - 400 + lag]) for lag in lags]
    assert abs(lags[int(np.argmax(scores))]) <= 16  # within 1 ms after the AAC round trip
    features = encode_audio(tiny_model.audio_encoder, torch.from_numpy(stored)[None], 16000, FPS).features
    torch.testing.assert_close(torch.from_numpy(np.asarray(dataset.array(clip, "audio"), np.float32)),
                               features, atol=2e-2, rtol=1e-2)


def test_rerun_does_nothing(prepared, video_folder, tiny_checkpoint, capsys):
    folder, expected = video_folder
    before = _files(prepared)
    code = main(["prepare", "--videos", str(folder), "--out", str(prepared), "--checkpoint", str(tiny_checkpoint),
                 "--fps", str(FPS), "--size", str(SIZE), "--store", "both", "-q"])
    assert code == 0
    assert f"prepared 0 video(s) into 0 clip(s); skipped 0; {len(expected)} already done" in capsys.readouterr().out
    assert _files(prepared) == before


def test_interrupted_run_resumes(prepared, video_folder, tiny_checkpoint, tmp_path):
    """A run killed after writing a video's clips but before its manifest line (and with a
    half-written staging folder) redoes exactly that video."""
    folder, expected = video_folder
    copy = tmp_path / "dataset"
    shutil.copytree(prepared, copy)
    lines = (copy / layout.MANIFEST_FILE).read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["source"] != "talk.mp4"]
    (copy / layout.MANIFEST_FILE).write_text("\n".join(kept) + '\n{"source": "talk.mp4", "stat')  # torn line
    (copy / layout.CLIPS_DIR / ".tmp-talk-0-123").mkdir()
    old = np.load(next((copy / layout.CLIPS_DIR).glob("talk-*")) / "frames.npy")

    summary = prepare_dataset(folder, copy, tiny_checkpoint, PrepareOptions(fps=FPS, size=SIZE, store="both"))
    assert [r["source"] for r in summary.prepared] == ["talk.mp4"] and not summary.skipped
    assert summary.already_done == len(expected) - 1
    clip_dirs = sorted(p.name for p in (copy / layout.CLIPS_DIR).iterdir())
    assert clip_dirs == sorted(p.name for p in (prepared / layout.CLIPS_DIR).iterdir() if not p.name.startswith("."))
    assert np.array_equal(np.load(copy / layout.CLIPS_DIR / clip_dirs[-1] / "frames.npy"), old)
    assert layout.read_manifest(copy)["talk.mp4"]["status"] == "ok"


def test_other_settings_into_the_same_dataset_are_refused(prepared, video_folder, tiny_checkpoint, capsys):
    folder, _ = video_folder
    code = main(["prepare", "--videos", str(folder), "--out", str(prepared), "--checkpoint", str(tiny_checkpoint),
                 "--fps", "25", "--size", str(SIZE), "--store", "both", "-q"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "emo prepare: error:" in err[0] and "fps" in err[0]


def test_missing_video_folder_is_one_line(tmp_path, tiny_checkpoint, capsys):
    code = main(["prepare", "--videos", str(tmp_path / "nope"), "--out", str(tmp_path / "d"),
                 "--checkpoint", str(tiny_checkpoint), "-q"])
    assert code == 2
    assert "is not a folder" in capsys.readouterr().err


def test_frame_rate_resampling_holds_the_frame_on_screen(tmp_path):
    # Frame k of a 30 fps source shows grey level 6k; output frame i at t = i / fps must show the
    # source frame on screen then: k = floor(i * 30 / fps).
    levels = torch.arange(30, dtype=torch.uint8) * 6
    frames = levels[:, None, None, None].expand(30, 32, 32, 3).contiguous()
    path = write_video(tmp_path / "ramp.mp4", frames, 30, crf=0)
    for fps in (10, 25, 30):
        stream = probe(path, fps)
        assert stream.num_frames == fps  # exactly 1 s
        got = [int(frame.mean().round()) for _, frame in iter_frames(stream)]
        want = [6 * math.floor(i * 30 / fps + 1e-9) for i in range(fps)]
        assert np.abs(np.array(got) - np.array(want)).max() <= 2, (fps, got)


def test_tracking_fills_short_gaps_and_cuts_clips():
    boxes = np.tile(np.array([10.0, 10, 30, 30]), (12, 1))
    boxes[:, [0, 2]] += np.arange(12)[:, None]
    boxes[3:5] = np.nan  # 2 missed frames: filled
    boxes[7:11] = np.nan  # 4 missed frames: a break
    filled = tracking.fill_gaps(boxes, max_gap=2)
    np.testing.assert_allclose(filled[3:5, 0], [13, 14])
    assert np.isnan(filled[7:11]).all()
    valid = ~np.isnan(filled[:, 0])
    breaks = np.zeros(12, bool)
    breaks[2] = True  # a scene cut before frame 2
    assert tracking.find_clips(valid, breaks, min_frames=2, max_frames=3) == [(0, 2), (2, 4), (4, 7)]
    crop = tracking.crop_around(filled[:7], width=50, height=40, margin=0.8)
    assert crop.side <= 40 and 0 <= crop.x <= 50 - crop.side and 0 <= crop.y <= 40 - crop.side


def _moving_head(step_angle: float = 0.0, step_shift: float = 0.0, frames: int = 6):
    head = astronaut_head(80)
    out, boxes = [], []
    for i in range(frames):
        canvas = np.full((128, 128, 3), 100, np.uint8)
        matrix = cv2.getRotationMatrix2D((40, 40), step_angle * i, 1.0)
        matrix[:, 2] += (24 + step_shift * i, 24)
        mask = cv2.warpAffine(np.ones((80, 80), np.uint8), matrix, (128, 128)) > 0
        canvas[mask] = cv2.warpAffine(head, matrix, (128, 128))[mask]
        out.append(canvas)
        boxes.append([44 + step_shift * i, 44, 84 + step_shift * i, 84])  # 40 px face, radius 20
    return np.stack(out), np.array(boxes, dtype=np.float32)


def test_face_align_measures_roll_and_turn_speed():
    frames, boxes = _moving_head(step_angle=2.0)
    np.testing.assert_allclose(FaceAlignSpeed()(frames, boxes), 2.0, rtol=0.1)  # pure roll, degrees/frame
    frames, boxes = _moving_head(step_shift=3.0)
    expected = math.degrees(3.0 / 20)  # centre moves 3 px on a 20 px radius
    np.testing.assert_allclose(FaceAlignSpeed()(frames, boxes), expected, rtol=0.1)
    np.testing.assert_allclose(BoxMotionSpeed()(frames, boxes), expected, rtol=1e-5)


def test_face_align_follows_the_known_tilt_of_synthetic_talkers():
    synthetic = pytest.importorskip("emo.synthetic")
    talker = synthetic.make_talker(seed=3, seconds=2.0, fps=25.0, size=64, speed=np.linspace(0.0, 1.4, 50))
    true = np.abs(np.diff(talker.head_angle))  # degrees per frame of the tilt about the neck
    measured = FaceAlignSpeed()(talker.frames, talker.face_boxes)[1:]
    assert np.corrcoef(true, measured)[0, 1] > 0.9
    # The tilt rolls the face and swings its centre by neck x dθ; the estimator reads that swing as
    # a further turn of |shift| / r (r: half the box width), so it measures sqrt(1 + (neck / r)^2)
    # times the tilt, as its formula says.
    identity = talker.identity
    neck, r = synthetic.HEAD_PIVOT * identity.face_b, identity.face_a
    assert measured.mean() == pytest.approx(true.mean() * np.hypot(1, neck / r), rel=0.15)


class ConstantSpeed:
    name = "constant"

    def __call__(self, frames, boxes):
        return np.full(len(boxes), 0.5, np.float32)


def test_speed_estimator_plugs_in_by_name_or_import_path():
    assert get_speed_estimator("face-align").name == "face-align"
    plugged = get_speed_estimator("tests.emo.train.test_prepare:ConstantSpeed")
    assert plugged(None, np.zeros((3, 4))).tolist() == [0.5] * 3
    with pytest.raises(ValueError, match="box-motion"):
        get_speed_estimator("6drepnet")


def test_speed_buckets_follow_the_data():
    speeds = np.random.default_rng(0).uniform(0, 1, 100_000)
    centres, radii = compute_speed_buckets(speeds, 4)
    np.testing.assert_allclose(centres, [0.125, 0.375, 0.625, 0.875], atol=0.01)
    np.testing.assert_allclose(radii, 0.25, atol=0.01)


def test_synthetic_talkers_use_their_ground_truth(tmp_path, tiny_checkpoint):
    """An `emo synth` talker's .json gives the face boxes and speeds (Haar finds drawn 64-px faces in
    ~20 % of frames); the whole square frame is the crop; speeds follow the dataset's frame rate."""
    from emo import synthetic

    videos = tmp_path / "talkers"
    videos.mkdir()
    talker = synthetic.make_talker(7, 1.6, fps=25.0, size=64, speed=np.linspace(0.2, 1.2, 40))
    synthetic.write_talker(talker, videos / "talker_0000007.mp4")
    (videos / "plain.json").write_text('{"not": "a talker"}')  # other JSON files are not read as truth

    out = tmp_path / "dataset"
    summary = prepare_dataset(videos, out, tiny_checkpoint, PrepareOptions(fps=25, size=64))
    (record,) = summary.prepared
    assert record["faces_and_speeds"] == "ground truth" and record["face_detected"] == 1.0
    dataset = layout.open_dataset(out)
    (clip,) = dataset.clips
    assert clip.num_frames == 40
    np.testing.assert_allclose(dataset.array(clip, "boxes"), talker.face_boxes, atol=0.01)
    np.testing.assert_allclose(dataset.array(clip, "speed"), talker.speed, atol=1e-4)
    frames = np.asarray(dataset.array(clip, "frames"), dtype=np.float32)
    assert np.abs(frames - talker.frames).mean() < 6  # the whole frame, only video-coding error

    half = prepare_dataset(videos, tmp_path / "at10", tiny_checkpoint, PrepareOptions(fps=10, size=32))
    clip10 = layout.open_dataset(tmp_path / "at10").clips[0]
    index = np.floor(np.arange(clip10.num_frames) * 2.5 + 1e-9).astype(int)
    np.testing.assert_allclose(layout.open_dataset(tmp_path / "at10").array(clip10, "speed"),
                               talker.speed[index] * 2.5, atol=1e-3)  # degrees per frame at 10 fps
    assert half.prepared[0]["faces_and_speeds"] == "ground truth"

    detected = prepare_dataset(videos, tmp_path / "detected", tiny_checkpoint,
                               PrepareOptions(fps=25, size=64, ground_truth=False))
    outcome = (detected.prepared + detected.skipped)[0]
    assert outcome.get("faces_and_speeds", "detected and estimated") == "detected and estimated"


def test_a_malformed_ground_truth_skips_the_video_with_a_reason(tmp_path, tiny_checkpoint):
    from emo import synthetic

    videos = tmp_path / "talkers"
    videos.mkdir()
    path = synthetic.write_talker(synthetic.make_talker(8, 1.2, size=64), videos / "talker_0000008.mp4")
    truth = json.loads(path.with_suffix(".json").read_text())
    truth["speed"] = truth["speed"][:5]
    path.with_suffix(".json").write_text(json.dumps(truth))
    summary = prepare_dataset(videos, tmp_path / "dataset", tiny_checkpoint, PrepareOptions(fps=25, size=64))
    (skipped,) = summary.skipped
    assert "ground truth" in skipped["reason"] and "speeds" in skipped["reason"]
