"""`python -m emo batch JOBS.jsonl`: a queue of videos, finished ones skipped, bad lines caught
before any work, failed jobs reported without stopping the queue, and two processes under
`accelerate launch` sharing the queue."""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from emo.cli import main
from emo.video import probe_video, read_video_frames
from tests.helpers import accelerate_launch, portrait, sine, write_wav

FRAMES = 15  # 0.6 s of audio at 25 fps


@pytest.fixture(autouse=True)
def one_thread():
    """These videos are tiny: one thread beats two that wait on each other on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def media(tmp_path):
    """A folder with a portrait, its face mask, a voice, a garbage "audio" file and out/."""
    Image.fromarray((portrait(64) * 255).to(torch.uint8).numpy()).save(tmp_path / "portrait.png")
    mask = np.zeros((64, 64), np.uint8)
    mask[12:52, 12:52] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    write_wav(tmp_path / "voice.wav", sine(0.6, 16000), 16000)
    (tmp_path / "noise.wav").write_bytes(b"this is not audio at all, just some bytes" * 10)
    (tmp_path / "out").mkdir()
    return tmp_path


def job(name: str, **options) -> dict:
    """A line writing out/<name>; `options` override any key."""
    return {"image": "portrait.png", "audio": "voice.wav", "out": f"out/{name}", **options}


def write_jobs(folder, *lines) -> str:
    """lines: dicts (written as JSON) or raw text; relative paths in them start at `folder`."""
    path = folder / "jobs.jsonl"
    path.write_text("".join((json.dumps(line) if isinstance(line, dict) else line) + "\n" for line in lines))
    return str(path)


def batch_args(jobs: str, checkpoint, media, *extra) -> list[str]:
    return ["batch", jobs, "--checkpoint", str(checkpoint), "--mask", str(media / "mask.png"), "--steps", "2",
            "--size", "64", "-q", *extra]


def outputs(media) -> list[str]:
    return sorted(path.name for path in (media / "out").iterdir())


def test_three_jobs_then_a_rerun_skips_them_and_overwrite_runs_them(media, tiny_checkpoint, capsys):
    jobs = write_jobs(media, "# portrait, voice and output per line", job("a.mp4"), "",
                      job("b.webm", seed=1), job("c.mp4", seed=2))
    assert main(batch_args(jobs, tiny_checkpoint, media)) == 0
    printed = capsys.readouterr().out
    assert "3 to run, 0 already done" in printed and "batch: 3 done, 0 skipped" in printed
    assert "line 2 -> a.mp4 done" in printed and "line 5 -> c.mp4 done" in printed
    assert outputs(media) == ["a.mp4", "b.webm", "c.mp4"]
    for name, audio_codec in (("a.mp4", "aac"), ("b.webm", "opus"), ("c.mp4", "aac")):
        info = probe_video(media / "out" / name)
        assert info["frames"] == FRAMES and (info["width"], info["height"]) == (64, 64)
        assert info["audio_codec"] == audio_codec and info["audio_seconds"] == pytest.approx(0.6, abs=0.05)

    written = {name: (media / "out" / name).stat().st_mtime_ns for name in outputs(media)}
    assert main(batch_args(jobs, tiny_checkpoint, media)) == 0
    printed = capsys.readouterr().out
    assert "0 to run, 3 already done" in printed and "batch: 0 done, 3 skipped (already done), 0 failed" in printed
    assert {name: (media / "out" / name).stat().st_mtime_ns for name in outputs(media)} == written

    assert main(batch_args(jobs, tiny_checkpoint, media, "--overwrite")) == 0
    assert "batch: 3 done, 0 skipped" in capsys.readouterr().out
    assert all((media / "out" / name).stat().st_mtime_ns != written[name] for name in written)


def test_a_line_options_win_over_the_command_line_and_each_model_loads_once(media, tiny_checkpoint, monkeypatch,
                                                                           capsys):
    import emo.pipeline

    shutil.copy(tiny_checkpoint, media / "other.safetensors")
    seen, loads = {}, []
    denoise, from_checkpoint = emo.pipeline.EMOPipeline._denoise, emo.pipeline.EMOPipeline.from_checkpoint

    def record_settings(self, scheduler, settings, *args, **kwargs):
        seen.setdefault(settings.seed, (settings.steps, settings.size))
        return denoise(self, scheduler, settings, *args, **kwargs)

    def count_loads(path, **kwargs):
        loads.append(os.path.basename(path))
        return from_checkpoint(path, **kwargs)

    monkeypatch.setattr(emo.pipeline.EMOPipeline, "_denoise", record_settings)
    monkeypatch.setattr(emo.pipeline.EMOPipeline, "from_checkpoint", count_loads)
    jobs = write_jobs(media, job("a.mp4"), job("b.mp4", seed=1, checkpoint="other.safetensors"),
                      job("c.mp4", seed=2, steps=3, size=32, fps=10))
    assert main(batch_args(jobs, tiny_checkpoint, media)) == 0
    assert seen == {0: (2, 64), 1: (2, 64), 2: (3, 32)}
    assert sorted(loads) == ["other.safetensors", "tiny.safetensors"]  # a, c share the command line's model
    a, b = (read_video_frames(media / "out" / name) for name in ("a.mp4", "b.mp4"))
    assert a.shape == b.shape and (a - b).abs().mean() > 0.01  # seeds 0 and 1 differ
    info = probe_video(media / "out" / "c.mp4")
    assert (info["width"], info["frames"]) == (32, 6)  # ceil(0.6 s x 10 fps)
    assert "3 done" in capsys.readouterr().out


@pytest.mark.parametrize("bad_line, fragments", [
    (job("b.mp4", sead=3), ["line 2", "unknown key 'sead'", "did you mean 'seed'"]),
    (job("b.mp4", device="cpu"), ["line 2", "--device on the command line"]),
    (job("b.mp4", image="missing.png"), ["line 2", "missing.png does not exist"]),
    (job("b.mp4", steps="two"), ["line 2", "steps must be a whole number"]),
    (job("b.mp4", crop="circle"), ["line 2", "crop must be one of face, center, pad"]),
    (job("b.gif"), ["line 2", "out must end in .mp4 or .webm"]),
    (job("b.mp4", out="portrait.png/b.mp4"), ["line 2", "cannot create the folder"]),
    ({"image": "portrait.png", "out": "out/b.mp4"}, ["line 2", "missing 'audio'"]),
    ('{"image": "portrait.png", "audio": "voice.wav" "out": "out/b.mp4"}', ["line 2", "not valid JSON"]),
    ('["portrait.png", "voice.wav", "out/b.mp4"]', ["line 2", "expected a JSON object"]),
    (job("a.mp4", seed=5), ["lines 1 and 2 both write"]),
])
def test_a_bad_line_stops_everything_before_any_work(media, tiny_checkpoint, capsys, bad_line, fragments):
    jobs = write_jobs(media, job("a.mp4"), bad_line, job("c.mp4"))
    assert main(batch_args(jobs, tiny_checkpoint, media)) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("emo batch: error: jobs.jsonl:") and len(err.splitlines()) == 1, err
    assert all(fragment in err for fragment in fragments), err
    assert "nothing was run" in err and captured.out == ""
    assert outputs(media) == []


def test_a_file_without_jobs_says_what_a_line_looks_like(media, tiny_checkpoint, capsys):
    jobs = write_jobs(media, "# nothing yet", "")
    assert main(batch_args(jobs, tiny_checkpoint, media)) == 2
    assert "holds no jobs" in capsys.readouterr().err


def test_a_failing_job_is_reported_and_the_queue_goes_on(media, tiny_checkpoint, capsys):
    jobs = write_jobs(media, job("a.mp4"), job("b.mp4", audio="noise.wav"), job("c.mp4"))
    assert main(batch_args(jobs, tiny_checkpoint, media)) == 1
    captured = capsys.readouterr()
    assert re.search(r"line 2 -> b\.mp4 failed: load_audio: .*noise\.wav.* could not be decoded", captured.err)
    assert "batch: 2 done, 0 skipped (already done), 1 failed (line 2)" in captured.out
    assert outputs(media) == ["a.mp4", "c.mp4"]


def test_stop_on_error_stops_at_the_first_failure(media, tiny_checkpoint, capsys):
    jobs = write_jobs(media, job("a.mp4", audio="noise.wav"), job("b.mp4"))
    assert main(batch_args(jobs, tiny_checkpoint, media, "--stop-on-error")) == 1
    assert "0 done, 0 skipped (already done), 1 failed (line 1), 1 not run" in capsys.readouterr().out
    assert outputs(media) == []


def test_interrupt_keeps_finished_videos_and_leaves_no_partial_file(media, tiny_checkpoint, monkeypatch, capsys):
    import emo.pipeline

    denoise, calls = emo.pipeline.EMOPipeline._denoise, []

    def interrupt_second_video(self, *args, **kwargs):  # each video here has 2 clips
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return denoise(self, *args, **kwargs)

    monkeypatch.setattr(emo.pipeline.EMOPipeline, "_denoise", interrupt_second_video)
    jobs = write_jobs(media, job("a.mp4"), job("b.mp4"))
    assert main(batch_args(jobs, tiny_checkpoint, media)) == 130
    assert "run the same command again" in capsys.readouterr().err
    assert outputs(media) == ["a.mp4"]  # no b.mp4, no hidden temporary file


def test_every_job_failing_for_any_reason_still_gives_the_summary(media, tiny_checkpoint, monkeypatch, capsys):
    import emo.pipeline

    def fail(self, *args, **kwargs):  # not a ValueError: what a GPU or a library bug raises
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(emo.pipeline.EMOPipeline, "_denoise", fail)
    jobs = write_jobs(media, job("a.mp4"), job("b.mp4"), job("c.mp4"))
    summary = media / "reports" / "summary.json"
    assert main(batch_args(jobs, tiny_checkpoint, media, "--summary", str(summary))) == 1
    out = capsys.readouterr().out
    assert "batch: 0 done, 0 skipped (already done), 3 failed (lines 1, 2, 3)" in out
    assert out.count("failed: RuntimeError: CUDA error: an illegal memory access") == 3
    report = json.loads(summary.read_text())
    assert report["done"] == [] and report["not_run"] == [] and sorted(report["failed"]) == ["1", "2", "3"]
    assert report["failed"]["2"] == "RuntimeError: CUDA error: an illegal memory access was encountered"
    assert outputs(media) == []


def test_two_processes_share_the_queue(media, tiny_checkpoint, tmp_path):
    jobs = write_jobs(media, *(job(f"{name}.mp4", seed=seed) for seed, name in enumerate("abcd")))
    output = accelerate_launch(["-m", "emo", *batch_args(jobs, tiny_checkpoint, media)], tmp_path, timeout=180)
    assert outputs(media) == ["a.mp4", "b.mp4", "c.mp4", "d.mp4"]
    assert all(probe_video(media / "out" / name)["frames"] == FRAMES for name in outputs(media))
    ran = sorted(re.findall(r"\[process (\d)/2\] line (\d) -> (\w)\.mp4 done", output))
    assert ran == [("0", "1", "a"), ("0", "3", "c"), ("1", "2", "b"), ("1", "4", "d")], output[-3000:]
    assert output.count("4 to run, 0 already done over 2 processes") == 1
    assert output.count("batch: 4 done, 0 skipped (already done), 0 failed") == 1



def test_two_processes_resume_and_a_failed_job_fails_alone(media, tiny_checkpoint, tmp_path):
    (media / "out" / "d.mp4").write_bytes(b"finished by an earlier, interrupted run")
    jobs = write_jobs(media, job("a.mp4"), job("b.mp4", audio="noise.wav"), job("c.mp4"), job("d.mp4"),
                      job("e.mp4"))
    summary = tmp_path / "summary.json"
    output = accelerate_launch(["-m", "emo", *batch_args(jobs, tiny_checkpoint, media, "--summary", summary)],
                               tmp_path, timeout=180, status=1)
    assert outputs(media) == ["a.mp4", "c.mp4", "d.mp4", "e.mp4"]
    assert (media / "out" / "d.mp4").read_bytes().startswith(b"finished by")  # skipped, not redone
    assert output.count("4 to run, 1 already done over 2 processes") == 1
    assert output.count("batch: 3 done, 1 skipped (already done), 1 failed (line 2)") == 1, output[-3000:]
    report = json.loads(summary.read_text())
    assert report["done"] == [1, 3, 5] and report["skipped"] == [4] and list(report["failed"]) == ["2"]
    assert "noise.wav" in report["failed"]["2"]
