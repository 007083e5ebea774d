"""`emo prepare`: talking/singing videos -> an EMO training dataset (layout in emo/data/__init__.py).

`prepare_video` does one source video and raises `UnusableVideo` with a short reason when it cannot
be used (no audio, no face, too short, lengths that disagree, a file FFmpeg cannot read);
`prepare_dataset` runs it over a folder, in parallel processes, records every result in the
manifest as soon as it is known (so an interrupted run resumes where it stopped and a re-run does
nothing), and finally computes the speed buckets from the speeds of the whole dataset.
"""

from __future__ import annotations

import concurrent.futures as futures
from concurrent.futures.process import BrokenProcessPool
import hashlib
import json
import logging
import math
import multiprocessing
import os
import re
import shutil
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import audio as audio_lib
from . import layout
from .decode import UnusableVideo, iter_frames, probe
from .encoders import checkpoint_path, fingerprint, load_components
from .head_speed import compute_speed_buckets, get_speed_estimator
from .tracking import (
    Crop,
    box_jumps,
    crop_around,
    detect,
    fill_gaps,
    find_clips,
    pick_face,
    scene_cuts,
    smooth,
    thumbnail,
)

logger = logging.getLogger(__name__)

# Files that are certainly not videos are not even tried (anything else FFmpeg may read is).
NOT_VIDEO_SUFFIXES = {".txt", ".md", ".json", ".jsonl", ".csv", ".yaml", ".yml", ".jpg", ".jpeg", ".png",
                      ".wav", ".mp3", ".flac", ".srt", ".vtt", ".nfo", ".npy", ".safetensors", ".tmp"}


@dataclass
class PrepareOptions:
    """How videos become clips. The first four must stay the same for every run into one dataset."""

    fps: float = 25.0  # EMO trains and samples at 25 fps (paper §4.1)
    size: int = 512  # crop side in pixels (paper: 512x512)
    store: str = "frames"  # "frames", "latents" (VAE latents only) or "both"
    speed_estimator: str = "face-align"  # a registered name or "package.module:factory"
    speed_buckets: int | None = None  # number of speed buckets; None: the checkpoint's
    min_seconds: float = 1.0  # shortest clip kept (and shortest video tried)
    max_clip_seconds: float = 10.0  # longer stretches are split (each piece gets its own crop)
    crop_margin: float = 0.8  # crop side = union of the face boxes + margin x face size
    detect_every: int = 1  # run the face detector on every k-th frame (in between: interpolated)
    detect_max_side: int = 640  # frames are shrunk to this long side for detection
    max_gap_seconds: float = 0.4  # missed detections up to this long are interpolated
    smooth_frames: int = 5  # moving average of the face boxes (Haar boxes jitter)
    cut_threshold: float = 0.2  # mean grey-level change (0..1) that counts as a scene cut
    max_length_mismatch: float = 0.5  # seconds audio and video may differ by
    device: str = "cpu"  # where wav2vec2 and the VAE run
    # Use the ground truth written beside a synthetic talker (see read_synthetic_truth) instead of
    # detecting faces and estimating speeds.
    ground_truth: bool = True

    def __post_init__(self) -> None:
        checks = [
            (self.fps > 0, f"fps must be > 0, got {self.fps}"),
            (self.size >= 8 and self.size % 8 == 0, f"size must be a multiple of 8, got {self.size}"),
            (self.store in layout.STORE_CHOICES, f"store must be one of {layout.STORE_CHOICES}, got {self.store!r}"),
            (self.min_seconds > 0, f"min_seconds must be > 0, got {self.min_seconds}"),
            (self.max_clip_seconds >= self.min_seconds,
             f"max_clip_seconds ({self.max_clip_seconds}) must be >= min_seconds ({self.min_seconds})"),
            (self.detect_every >= 1, f"detect_every must be >= 1, got {self.detect_every}"),
            (self.speed_buckets is None or self.speed_buckets >= 1,
             f"speed_buckets must be >= 1, got {self.speed_buckets}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"prepare: {message}")

    @property
    def wants_latents(self) -> bool:
        return self.store in ("latents", "both")


def video_id(relative: str) -> str:
    """A file-name-safe id, unique per relative path: readable stem + hash."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(relative).stem).strip("-")[:40] or "video"
    return f"{stem}-{hashlib.sha1(relative.encode()).hexdigest()[:8]}"


def find_videos(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"prepare: --videos {folder} is not a folder; give the folder holding the videos")
    found = [p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                     p.relative_to(folder).parts)
             and p.suffix.lower() not in NOT_VIDEO_SUFFIXES]
    return sorted(found)


@dataclass
class Encoders:
    """What a worker holds: wav2vec2, the VAE (only to store latents) and the speed estimator."""

    audio_encoder: torch.nn.Module
    vae: torch.nn.Module | None
    estimator: object
    device: torch.device


def load_encoders(checkpoint, options: PrepareOptions) -> Encoders:
    names = ("audio_encoder", "vae") if options.wants_latents else ("audio_encoder",)
    device = torch.device(options.device)
    _, modules = load_components(checkpoint, names, device=device)
    return Encoders(audio_encoder=modules["audio_encoder"], vae=modules.get("vae"),
                    estimator=get_speed_estimator(options.speed_estimator), device=device)


# ---- one video --------------------------------------------------------------------------------

def _load_audio(path: Path, stream) -> tuple[torch.Tensor, int, float]:
    """Audio aligned to the first video frame: (waveform [C, T], rate, seconds)."""
    if stream.audio_start is None:
        raise UnusableVideo("no audio stream")
    try:
        waveform, rate = audio_lib.load_audio(path)
    except ValueError as error:
        raise UnusableVideo(f"audio cannot be decoded ({error})") from error
    # Streams may start at different times; audio before the first frame is dropped, a late
    # start is padded with silence, so audio sample 0 plays with video frame 0.
    offset = int(round((stream.start - stream.audio_start) * rate))
    if offset > 0:
        waveform = waveform[:, offset:]
    elif offset < 0:
        waveform = torch.nn.functional.pad(waveform, (-offset, 0))
    return waveform, rate, waveform.shape[-1] / rate


def _detect_faces(stream, num_frames: int, options: PrepareOptions) -> tuple[np.ndarray, np.ndarray]:
    """Pass 1: face boxes (F, 4) in source pixels (NaN where none) and cut thumbnails."""
    boxes = np.full((num_frames, 4), np.nan)
    thumbs = np.zeros((num_frames, 32, 32), dtype=np.float32)
    previous = None
    for i, frame in iter_frames(stream, max_side=options.detect_max_side):
        if i >= num_frames:
            break
        thumbs[i] = thumbnail(frame)
        if i % options.detect_every:
            continue
        scale = stream.width / frame.shape[1]
        candidates = [tuple(v * scale for v in box) for box in detect(frame)]
        box = pick_face(candidates, previous)
        if box is not None:
            boxes[i] = previous = box
    return boxes, thumbs


SYNTHETIC_FORMAT = "emo-synthetic-talker"


@dataclass
class SyntheticTruth:
    """What `emo synth` writes beside each talker video (talker_<seed>.json, format
    "emo-synthetic-talker"): the face ellipse's box and the true head speed of every frame."""

    fps: float
    size: int  # the video's width = height, pixels
    boxes: np.ndarray  # (F, 4) float (x0, y0, x1, y1), the video's pixels
    speed: np.ndarray  # (F,) degrees per frame at `fps`

    def at(self, num_frames: int, fps: float, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (num_frames, 4) in pixels of a `width`-wide frame and speeds (num_frames,) in degrees
        per frame at `fps`, for the dataset's frames: frame i shows the source frame on screen at
        i / fps (as `iter_frames` resamples), floor(i * source fps / fps)."""
        index = np.floor(np.arange(num_frames) * self.fps / fps + 1e-9).astype(int)
        index = np.minimum(index, len(self.speed) - 1)
        return self.boxes[index] * (width / self.size), self.speed[index] * (self.fps / fps)


def read_synthetic_truth(video: Path) -> SyntheticTruth | None:
    """The ground truth beside a synthetic talker video (same name, .json), or None when there is no
    such file or it is another kind of JSON.

    Why: on `emo synth`'s drawn 64-px faces OpenCV's Haar detector finds the face in only ~20 % of
    the frames and the speed estimator measures a proxy; the generator knows the exact face box and
    head speed of every frame, so `prepare` uses them (PrepareOptions.ground_truth, on by default;
    `--no-ground-truth` makes it detect and estimate as for real videos)."""
    sidecar = video.with_suffix(".json")
    if not sidecar.is_file():
        return None
    try:
        data = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("format") != SYNTHETIC_FORMAT:
        return None
    try:
        boxes = np.asarray(data["face_boxes"], dtype=np.float64).reshape(-1, 4)
        speed = np.asarray(data["speed"], dtype=np.float64).reshape(-1)
        truth = SyntheticTruth(fps=float(data["fps"]), size=int(data["size"]), boxes=boxes, speed=speed)
    except (KeyError, TypeError, ValueError) as error:
        raise UnusableVideo(f"its ground truth {sidecar.name} is malformed ({error})") from error
    if len(boxes) != len(speed) or len(boxes) == 0 or truth.fps <= 0 or truth.size <= 0:
        raise UnusableVideo(f"its ground truth {sidecar.name} has {len(boxes)} face boxes and {len(speed)} speeds; "
                            "expected one of each per frame")
    return truth


def _encode_latents(vae, frames: np.ndarray, device, chunk: int = 8) -> np.ndarray:
    """uint8 frames [F, S, S, 3] -> VAE latents [F, 4, S/8, S/8] float16, scaled (the latent's
    mean: deterministic, and the same latents at every epoch)."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(frames), chunk):
            x = torch.from_numpy(np.asarray(frames[i:i + chunk])).to(device).permute(0, 3, 1, 2).float()
            x = x / 127.5 - 1.0
            latents = vae.encode(x).latent_dist.mode() * vae.config.scaling_factor
            out.append(latents.to("cpu", torch.float16).numpy())
    return np.concatenate(out)


def prepare_video(path: Path, relative: str, root: Path, options: PrepareOptions, encoders: Encoders) -> dict:
    """Prepare one video into `root/clips/`; returns its manifest record (status "ok").

    Raises UnusableVideo with the reason when the video cannot be used.
    """
    stream = probe(path, options.fps)
    if stream.seconds < options.min_seconds:
        raise UnusableVideo(f"too short: {stream.seconds:.2f} s < {options.min_seconds:.2f} s")
    waveform, rate, audio_seconds = _load_audio(path, stream)
    if abs(audio_seconds - stream.seconds) > options.max_length_mismatch:
        raise UnusableVideo(f"audio and video lengths differ: audio {audio_seconds:.2f} s, "
                            f"video {stream.seconds:.2f} s (tolerance {options.max_length_mismatch:.2f} s)")
    num_frames = min(stream.num_frames, int(math.floor(audio_seconds * options.fps + 1e-6)))

    truth = read_synthetic_truth(path) if options.ground_truth else None
    min_frames = max(2, math.ceil(options.min_seconds * options.fps))
    max_frames = max(min_frames, round(options.max_clip_seconds * options.fps))
    if truth is None:
        boxes, thumbs = _detect_faces(stream, num_frames, options)
        detected = int((~np.isnan(boxes[:, 0])).sum())
        if detected == 0:
            raise UnusableVideo("no face found")
        max_gap = max(options.detect_every, round(options.max_gap_seconds * options.fps))
        tracked = smooth(fill_gaps(boxes, max_gap), options.smooth_frames)
        valid = ~np.isnan(tracked[:, 0])
        breaks = scene_cuts(thumbs, options.cut_threshold) | box_jumps(tracked, max_shift=0.5)
        true_speeds = None
    else:
        # A synthetic talker: exact boxes and speeds, one shot, the face in every frame.
        tracked, true_speeds = truth.at(num_frames, options.fps, stream.width)
        detected = num_frames
        valid = np.ones(num_frames, dtype=bool)
        breaks = np.zeros(num_frames, dtype=bool)
    spans = find_clips(valid, breaks, min_frames, max_frames)
    if not spans:
        raise UnusableVideo(f"face tracked in only {valid.mean():.0%} of the frames, never for "
                            f"{options.min_seconds:.2f} s in one shot")

    vid = video_id(relative)
    names = [f"{vid}_{k:03d}" for k in range(len(spans))]
    staging = root / layout.CLIPS_DIR / f".tmp-{vid}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        if truth is None:
            crops = [crop_around(tracked[s:e], stream.width, stream.height, options.crop_margin) for s, e in spans]
        else:
            # A synthetic talker is framed as a portrait already, as the references that evaluation
            # and the demo give the model: its whole (square) frame is the crop.
            side = min(stream.width, stream.height)
            crops = [Crop(x=(stream.width - side) // 2, y=(stream.height - side) // 2, side=side) for _ in spans]
        owner = np.full(num_frames, -1)
        for k, (s, e) in enumerate(spans):
            owner[s:e] = k
        frames = []
        for k, (s, e) in enumerate(spans):
            (staging / names[k]).mkdir(parents=True)
            frames.append(np.lib.format.open_memmap(staging / names[k] / "frames.npy", mode="w+", dtype=np.uint8,
                                                    shape=(e - s, options.size, options.size, 3)))
        # Pass 2: full-resolution frames, cropped.
        wanted = np.zeros(stream.num_frames, dtype=bool)
        wanted[:num_frames] = owner >= 0
        for i, frame in iter_frames(stream, wanted=wanted):
            if i >= num_frames:
                break
            k = owner[i]
            frames[k][i - spans[k][0]] = crops[k].apply(frame, options.size)

        features = audio_lib.encode_audio(encoders.audio_encoder, waveform, rate, options.fps,
                                          duration_seconds=num_frames / options.fps).features
        if features.shape[0] < num_frames:  # rounding at the very end: repeat the last frame
            features = torch.cat([features, features[-1:].expand(num_frames - features.shape[0], -1, -1)])
        mono = audio_lib.resample(audio_lib.to_mono(waveform), rate, audio_lib.TARGET_SAMPLE_RATE).numpy()

        clips = []
        for k, (s, e) in enumerate(spans):
            folder = staging / names[k]
            crop_boxes = crops[k].map_boxes(tracked[s:e], options.size).astype(np.float32)
            if true_speeds is not None:
                speeds = true_speeds[s:e].astype(np.float32)
            else:
                speeds = np.asarray(encoders.estimator(frames[k], crop_boxes), dtype=np.float32)
            if speeds.shape != (e - s,):
                raise RuntimeError(f"speed estimator {options.speed_estimator!r} returned shape {speeds.shape} "
                                   f"for {e - s} frames")
            np.save(folder / "boxes.npy", crop_boxes)
            np.save(folder / "speed.npy", speeds)
            np.save(folder / "audio.npy", features[s:e].numpy().astype(np.float16))
            a, b = (round(x / options.fps * audio_lib.TARGET_SAMPLE_RATE) for x in (s, e))
            np.save(folder / "waveform.npy", mono[a:b].astype(np.float32))
            if options.wants_latents:
                np.save(folder / "latents.npy", _encode_latents(encoders.vae, frames[k], encoders.device))
            frames[k].flush()
            clips.append({"name": names[k], "start": s, "frames": e - s,
                          "crop": [crops[k].x, crops[k].y, crops[k].side],
                          "mean_speed": round(float(np.mean(speeds)), 4)})
        del frames
        for k, name in enumerate(names):
            if options.store == "latents":
                (staging / name / "frames.npy").unlink()
            final = root / layout.CLIPS_DIR / name
            shutil.rmtree(final, ignore_errors=True)
            os.replace(staging / name, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {
        "source": relative, "video": vid, "status": "ok", "bytes": path.stat().st_size,
        "seconds": round(stream.seconds, 3), "frames": num_frames, "source_fps": round(stream.source_fps, 3),
        "source_size": [stream.width, stream.height], "face_detected": round(detected / num_frames, 3),
        "faces_and_speeds": "ground truth" if truth is not None else "detected and estimated",
        "clips": clips,
    }


# ---- workers ----------------------------------------------------------------------------------

_WORKER: dict = {}


def _init_worker(checkpoint: str, options: PrepareOptions, threads: int) -> None:
    torch.set_num_threads(threads)
    import cv2

    cv2.setNumThreads(1)
    _WORKER["encoders"] = load_encoders(checkpoint, options)
    _WORKER["options"] = options


def _run_one(path: str, relative: str, root: str) -> tuple[dict, str | None]:
    """Prepare one video in a worker: (manifest record, traceback of an unexpected error)."""
    options = _WORKER["options"]
    size = Path(path).stat().st_size
    base = {"source": relative, "video": video_id(relative), "bytes": size}
    try:
        return prepare_video(Path(path), relative, Path(root), options, _WORKER["encoders"]), None
    except UnusableVideo as error:
        return {**base, "status": "skipped", "reason": error.reason}, None
    except Exception as error:  # a bug or an odd file must not end a run over thousands of videos
        return ({**base, "status": "skipped", "reason": f"error: {type(error).__name__}: {error}"},
                traceback.format_exc())


# ---- the dataset ------------------------------------------------------------------------------

@dataclass
class PrepareSummary:
    prepared: list[dict] = field(default_factory=list)  # this run, status ok
    skipped: list[dict] = field(default_factory=list)  # this run, with reasons
    already_done: int = 0  # found finished in the manifest
    dataset_clips: int = 0
    dataset_frames: int = 0

    def lines(self) -> list[str]:
        clips = sum(len(r["clips"]) for r in self.prepared)
        out = [f"prepared {len(self.prepared)} video(s) into {clips} clip(s); skipped {len(self.skipped)}; "
               f"{self.already_done} already done. Dataset: {self.dataset_clips} clips, {self.dataset_frames} frames."]
        out += [f"  skipped {r['source']}: {r['reason']}" for r in self.skipped]
        return out


def _dataset_info(options: PrepareOptions, config, encoders: Encoders) -> dict:
    return {
        "format": layout.FORMAT, "version": layout.FORMAT_VERSION,
        "fps": options.fps, "size": options.size, "store": options.store,
        "speed_estimator": encoders.estimator.name, "speed_unit": "degrees per frame",
        "audio": {"num_layers": config.audio.num_layers, "hidden_size": config.audio.hidden_size,
                  "encoder_fingerprint": fingerprint(encoders.audio_encoder)},
        "vae": ({"fingerprint": fingerprint(encoders.vae), "scaling_factor": encoders.vae.config.scaling_factor}
                if encoders.vae is not None else None),
        "options": {k: v for k, v in asdict(options).items() if k not in ("device", "speed_buckets")},
        "speed_buckets": None,
    }


_MUST_MATCH = ("fps", "size", "store", "speed_estimator", "audio", "vae")


def _check_same_settings(existing: dict, wanted: dict, root: Path, keys=_MUST_MATCH) -> None:
    different = [k for k in keys if existing.get(k) != wanted.get(k)]
    if different:
        detail = "; ".join(f"{k}: dataset has {existing.get(k)!r}, asked {wanted.get(k)!r}" for k in different)
        raise ValueError(f"prepare: {root} was prepared with other settings ({detail}); use the same settings "
                         "and checkpoint to add videos, or another --out")


def update_speed_buckets(root: Path, count: int) -> dict:
    """Recompute the speed buckets from every clip's speeds and store them in dataset.json (only
    written when they change, so a run that prepared nothing writes nothing)."""
    dataset = layout.open_dataset(root)
    info = dict(dataset.info)
    speeds = dataset.all_speeds()
    if speeds.size:
        centres, radii = compute_speed_buckets(speeds, count)
        info["speed_buckets"] = {"centers": centres, "radii": radii}
        info["speed_statistics"] = {
            "frames": int(speeds.size), "mean": round(float(speeds.mean()), 4),
            **{f"p{q}": round(float(np.percentile(speeds, q)), 4) for q in (5, 50, 95)},
            "max": round(float(speeds.max()), 4),
        }
    if info != dataset.info:
        layout.write_json_atomic(root / layout.DATASET_FILE, info)
    return info


def prepare_dataset(videos: Path, out: Path, checkpoint, options: PrepareOptions, *, workers: int = 1,
                    retry_skipped: bool = False, on_start: Callable[[int], None] | None = None,
                    on_video: Callable[[dict], None] | None = None) -> PrepareSummary:
    """Prepare every video under `videos` into the dataset `out` (created if needed).

    Resumable: videos already in the manifest (prepared, or skipped with a reason) are not
    touched again, unless their file size changed or `retry_skipped` is set for skipped ones.
    `on_start(pending)` and `on_video(record)` report progress.
    """
    videos, out = Path(videos), Path(out)
    checkpoint = checkpoint_path(checkpoint)
    if workers < 1:
        raise ValueError(f"prepare: --workers must be >= 1, got {workers}")
    sources = find_videos(videos)
    existing = layout.read_info(out) if out.is_dir() else None
    done = layout.read_manifest(out) if existing is not None else {}
    pending = []
    summary = PrepareSummary()
    for path in sources:
        relative = path.relative_to(videos).as_posix()
        record = done.get(relative)
        if record is not None and record.get("bytes") == path.stat().st_size and \
                (record["status"] == "ok" or not retry_skipped):
            summary.already_done += 1
            continue
        pending.append((path, relative, record))
    if on_start is not None:
        on_start(len(pending))

    if existing is not None:  # cheap settings first; encoder fingerprints once they are loaded
        _check_same_settings(existing, {"fps": options.fps, "size": options.size, "store": options.store,
                                        "speed_estimator": get_speed_estimator(options.speed_estimator).name},
                             out, keys=("fps", "size", "store", "speed_estimator"))
    config = None
    if pending or existing is None:
        from ..checkpoints import read_config

        config = read_config(checkpoint)
        encoders = load_encoders(checkpoint, options)
        wanted = _dataset_info(options, config, encoders)
        if existing is not None:
            _check_same_settings(existing, wanted, out)
        else:
            (out / layout.CLIPS_DIR).mkdir(parents=True, exist_ok=True)
            layout.write_json_atomic(out / layout.DATASET_FILE, wanted)
        # Staging folders of a killed run (one run per dataset at a time writes here).
        for stale in (out / layout.CLIPS_DIR).glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        for _, _, record in pending:  # a redone video's old clips go first
            for clip in (record or {}).get("clips", []):
                shutil.rmtree(out / layout.CLIPS_DIR / clip["name"], ignore_errors=True)

        def finish(record: dict, trace: str | None) -> None:
            layout.append_manifest(out, record)
            if record["status"] == "ok":
                summary.prepared.append(record)
            else:
                summary.skipped.append(record)
                log = logger.warning if trace else logger.info
                log("skipped %s: %s%s", record["source"], record["reason"], f"\n{trace}" if trace else "")
            if on_video is not None:
                on_video(record)

        threads = max(1, (os.cpu_count() or 1) // workers)
        if workers == 1 or len(pending) <= 1:
            _WORKER.update(encoders=encoders, options=options)
            try:
                for path, relative, _ in pending:
                    finish(*_run_one(str(path), relative, str(out)))
            finally:
                _WORKER.clear()
        else:
            del encoders  # each worker loads its own
            context = multiprocessing.get_context("spawn")  # CUDA and OpenCV are not fork-safe
            with futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                             initargs=(str(checkpoint), options, threads)) as pool:
                jobs = {pool.submit(_run_one, str(p), r, str(out)): r for p, r, _ in pending}
                try:
                    for job in futures.as_completed(jobs):
                        finish(*job.result())
                except BrokenProcessPool as error:
                    raise RuntimeError(
                        f"prepare: a worker process died (out of memory?) while preparing; finished videos are "
                        f"saved in {out}: run the same command again to resume, with fewer --workers"
                    ) from error

    count = options.speed_buckets
    if count is None:
        from ..checkpoints import read_config

        count = len((config or read_config(checkpoint)).speed.bucket_centers)
    info = update_speed_buckets(out, count)
    dataset = layout.open_dataset(out)
    summary.dataset_clips = len(dataset.clips)
    summary.dataset_frames = sum(c.num_frames for c in dataset.clips)
    if info.get("speed_buckets") is None:
        logger.warning("prepare: the dataset %s has no usable clips yet", out)
    return summary
