"""The command line against a matrix of unusual and invalid inputs and options.

Every case ends in one of two ways: success (exit 0, one video, maybe one `warning:`/`note:`
line saying what the user should know), or one `emo <command>: error: ...` line that names the
value and what would be right, exit status 2, and no file (and no folder) left behind. Never a
traceback. The bundled demo model (64 px) and a fraction of a second of voice keep it fast.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from emo.checkpoints import DEMO_CHECKPOINT
from emo.cli import main
from emo.runtime.devices import available_devices
from emo.video import probe_video
from tests.helpers import REPO, sine, write_wav

ASSETS = REPO / "emo" / "assets"

pytestmark = pytest.mark.skipif(not DEMO_CHECKPOINT.is_file(), reason="the demo model is not in emo/assets")


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("matrix")
    write_wav(folder / "voice.wav", sine(0.4, 16000), 16000)
    write_wav(folder / "silent.wav", torch.zeros(1, 6400), 16000)
    write_wav(folder / "short.wav", sine(0.1, 16000), 16000)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "text.wav").write_bytes(b"RIFF but not really a wav file")
    (folder / "garbage.png").write_bytes(b"this is not an image")
    Image.new("L", (10, 10), 255).save(folder / "small_mask.png")
    Image.new("RGB", (300, 200), (128, 128, 128)).save(folder / "blank.png")  # no face in it
    np.save(folder / "embedding.npy", np.zeros(512, np.float32))
    (folder / "a_file").write_text("a file where a folder is expected")
    # The sample portrait on a wider canvas: a photo that is not the model's square.
    photo = Image.new("RGB", (200, 120), (90, 110, 130))
    photo.paste(Image.open(ASSETS / "sample_portrait.png").convert("RGB").resize((96, 96)), (60, 12))
    photo.save(folder / "wide.jpg")
    return folder


def generate(media, out, *extra, mask=True, audio="voice.wav"):
    args = ["generate", "--image", str(ASSETS / "sample_portrait.png"), "--audio", str(media / audio),
            "--out", str(out), "--steps", "1"]
    if mask:
        args += ["--mask", str(ASSETS / "sample_portrait_mask.png")]
    return args + [str(value) for value in extra]


def run(args, capsys):
    status = main(args)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def left_behind(folder):
    return sorted(path.name for path in folder.rglob("*"))


# ---- nonsense option values: refused where parsed ------------------------------------------------
BAD_OPTIONS = [
    (("--fps", "0"), "argument --fps: must be a number > 0 and <= 240, got '0'"),
    (("--fps", "-25"), "argument --fps: must be a number > 0"),
    (("--fps", "inf"), "got 'inf'"),
    (("--fps", "fast"), "got 'fast'"),
    (("--steps", "0"), "argument --steps: must be a whole number >= 1 and <= 1000, got '0'"),
    (("--steps", "2.5"), "got '2.5'"),
    (("--steps", "5000"), "got '5000'"),
    (("--size", "63"), "argument --size: must be a positive multiple of 8 <= 4096, got '63'"),
    (("--size", "0"), "got '0'"),
    (("--size", "-64"), "got '-64'"),
    (("--seed", "-1"), "argument --seed: must be a whole number >= 0 and <= 9223372036854775807, got '-1'"),
    (("--speed", "-5"), "argument --speed: must be a number >= 0, got '-5'"),
    (("--speed", "nan"), "got 'nan'"),
    (("--guidance", "-1"), "argument --guidance: must be a number >= 0"),
    (("--crf", "-1"), "argument --crf: must be a whole number >= 0 and <= 63"),
    (("--crf", "70"), "got '70'"),
    (("--start", "-1"), "argument --start: must be a number >= 0"),
    (("--duration", "0"), "argument --duration: must be a number > 0"),
    (("--frames-per-clip", "0"), "argument --frames-per-clip: must be a whole number >= 1"),
    (("--motion-frames", "-2"), "argument --motion-frames: must be a whole number >= 0"),
    (("--threads", "0"), "argument --threads: must be a whole number >= 1"),
    (("--max-size", "-1"), "argument --max-size: must be a whole number >= 0"),
    (("--lip-weight", "-1"), "argument --lip-weight: must be a number >= 0"),
    (("--speed-from-audio", "-1", "1"), "argument --speed-from-audio: must be a number >= 0, got '-1'"),
    (("--scheduler", "fastest"), "argument --scheduler: invalid choice: 'fastest'"),
    (("--crop", "circle"), "argument --crop: invalid choice: 'circle'"),
    (("--precision", "fp8"), "argument --precision: invalid choice: 'fp8'"),
    (("--bogus", "1"), "unrecognized arguments: --bogus 1"),
]


@pytest.mark.parametrize("extra, message", BAD_OPTIONS, ids=[" ".join(case[0]) for case in BAD_OPTIONS])
def test_a_nonsense_option_value_is_one_line_exit_2_and_nothing_written(media, tmp_path, capsys, extra, message):
    out = tmp_path / "new folder" / "talk.mp4"
    status, stdout, err = run(generate(media, out, *extra), capsys)
    assert status == 2
    assert err.startswith("emo generate: error: ") and len(err.strip().splitlines()) == 1, err
    assert message in err, err
    assert stdout == ""
    assert left_behind(tmp_path) == []  # not even the output's folder


def test_a_missing_required_option_names_it(media, capsys):
    status, _, err = run(["generate", "--image", "x.png", "--audio", "y.wav"], capsys)
    assert status == 2 and err.startswith("emo generate: error: the following arguments are required: --out")


# ---- bad inputs and impossible combinations: found before the work, one line ---------------------
BAD_INPUTS = {
    "image missing": (dict(image="nope.png"), "no file at"),
    "image is a folder": (dict(image="."), "is a directory"),
    "image is not an image": (dict(image="garbage.png"), "garbage.png"),
    "audio is an image": (dict(audio_file=ASSETS / "sample_portrait.png"), "has no audio stream"),
    "audio empty": (dict(audio="empty.wav"), "empty"),
    "audio undecodable": (dict(audio="text.wav"), "could not be decoded as audio"),
    "start beyond the voice": (dict(extra=("--start", "9")), "--start 9: the voice voice.wav is only 0.40 s long"),
    "crf beyond mp4's range": (dict(extra=("--crf", "60")), "--crf 60: .mp4 videos take 0..51"),
    "speed and speed from audio": (dict(extra=("--speed", "1", "--speed-from-audio", "0.2", "1")),
                                   "give one of them"),
    "speed from audio min above max": (dict(extra=("--speed-from-audio", "1.2", "0.2")), "min_speed 1.2 is above"),
    "mask of another size": (dict(mask_file="small_mask.png"), "give a mask of the image's size"),
    "mask missing": (dict(mask_file="nope.png"), "no file at"),
    "face embedding on an EMO model": (dict(extra=("--face-embedding", "embedding.npy")), "take no face embedding"),
    "face embedding missing": (dict(extra=("--face-embedding", "nope.npy")), "no file at"),
    "no face and no mask": (dict(image="blank.png", mask=False), "no face found"),
    "out without a video suffix": (dict(out="talk.gif"), "--out must end in .mp4 or .webm, got 'talk.gif'"),
    "out is a folder": (dict(out="folder.mp4", make_folder=True), "is a folder"),
    "out below a file": (dict(out="a_file/talk.mp4"), "a_file is a file"),
    "checkpoint missing": (dict(extra=("--checkpoint", "nope.safetensors")), "nope.safetensors"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_a_bad_input_is_one_line_exit_2_and_no_file(media, tmp_path, capsys, monkeypatch, case):
    spec, message = BAD_INPUTS[case]
    monkeypatch.chdir(media)  # relative names are the media folder's files
    out = tmp_path / "out" / spec.get("out", "talk.mp4")
    if spec.get("make_folder"):
        out.mkdir(parents=True)
    args = generate(media, out, *spec.get("extra", ()), mask=spec.get("mask", True))
    if "image" in spec:
        args[args.index("--image") + 1] = spec["image"]
    if "audio" in spec:
        args[args.index("--audio") + 1] = spec["audio"]
    if "audio_file" in spec:
        args[args.index("--audio") + 1] = str(spec["audio_file"])
    if "mask_file" in spec:
        args[args.index("--mask") + 1] = spec["mask_file"]
    if "a_file" in str(out):
        out = media / spec["out"]
        args[args.index("--out") + 1] = str(out)
    before = left_behind(media)
    status, _, err = run(args, capsys)
    assert status == 2, err
    assert err.startswith("emo generate: error: ") and len(err.strip().splitlines()) == 1, err
    assert message in err, err
    assert "Traceback" not in err and "unexpected" not in err
    made = [name for name in left_behind(tmp_path) if name not in ("out", "folder.mp4")]
    assert made == [] and left_behind(media) == before


@pytest.mark.skipif("cuda" in available_devices(), reason="this machine has a CUDA GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_on_a_machine_without_it_is_one_line(media, tmp_path, capsys, device):
    status, _, err = run(generate(media, tmp_path / "talk.mp4", "--device", device), capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"emo generate: error: --device {device}: this PyTorch has no CUDA GPU"), err
    assert left_behind(tmp_path) == []


def test_an_unknown_device_name_lists_the_known_ones(media, tmp_path, capsys):
    status, _, err = run(generate(media, tmp_path / "talk.mp4", "--device", "tpu"), capsys)
    assert status == 2 and "--device 'tpu' is not a device name; use one of auto, cpu, cuda" in err


# ---- unusual but valid: success, with one line when the user should know something --------------
UNUSUAL = {
    "silent voice": (dict(audio="silent.wav"), "note: the voice is silent"),
    "very short voice": (dict(audio="short.wav"), "note: the voice is only 0.10 s long"),
    "one frame of voice": (dict(extra=("--duration", "0.01")), "note: the voice is only"),
    "size off the trained size": (dict(extra=("--size", "96")), "warning: the model was trained at 64 px; at 96 px"),
    "clip longer than the temporal layers": (dict(extra=("--frames-per-clip", "40")),
                                             "warning: 40 frames per clip + 4 motion frames = 44 frame positions"),
    "more motion frames than a clip": (dict(extra=("--frames-per-clip", "2", "--motion-frames", "6")), None),
    "speed beyond the model's": (dict(extra=("--speed", "5")), "warning: --speed 5 is beyond the speeds"),
    "no guidance": (dict(extra=("--guidance", "0")), None),
    "webm at its worst quality": (dict(out="talk.webm", extra=("--crf", "63")), None),
    "padded crop without mask": (dict(extra=("--crop", "pad")), None),
    "bf16 on the CPU": (dict(extra=("--precision", "bf16")), None),
    "output folders to make": (dict(out="a/b/c/talk.mp4"), None),
}


@pytest.mark.parametrize("case", list(UNUSUAL))
def test_an_unusual_but_valid_run_succeeds_with_at_most_one_line_to_know(media, tmp_path, capsys, case):
    spec, note = UNUSUAL[case]
    out = tmp_path / spec.get("out", "talk.mp4")
    args = ["-q", *generate(media, out, *spec.get("extra", ()), audio=spec.get("audio", "voice.wav"))]
    status, stdout, err = run(args, capsys)
    assert status == 0, err
    lines = [line for line in err.strip().splitlines() if line]
    if note is None:
        assert lines == [], err
    else:
        assert len(lines) == 1 and lines[0].startswith("emo generate: ") and note in lines[0], err
    assert out.is_file() and probe_video(out)["frames"] >= 1
    assert [path.name for path in out.parent.iterdir()] == [out.name]  # no temporary file left
    assert f"wrote {out}" in stdout


def test_a_wide_photo_is_pasted_back_and_no_paste_back_keeps_the_square(media, tmp_path, capsys):
    photo = str(media / "wide.jpg")
    pasted, square = tmp_path / "pasted.mp4", tmp_path / "square.mp4"
    for out, extra in ((pasted, ()), (square, ("--no-paste-back",))):
        args = generate(media, out, *extra, mask=False)
        args[args.index("--image") + 1] = photo
        status, _, err = run(args, capsys)
        assert status == 0, err
    assert (probe_video(pasted)["width"], probe_video(pasted)["height"]) == (200, 120)
    assert (probe_video(square)["width"], probe_video(square)["height"]) == (64, 64)


# ---- help, global flags, plan line, permissions, determinism -------------------------------------
def test_help_shows_the_defaults_used_and_every_option_has_help(capsys):
    import argparse

    from emo.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, command in commands.items():
        for action in command._actions:
            assert action.help and action.help != argparse.SUPPRESS, f"emo {name} {action.option_strings}: no help"
    assert main(["generate", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for said in ("(default: the checkpoint's; the demo model's is 20)",  # --steps
                 "(default: the checkpoint's; the demo model's is 64 px)",  # --size
                 "(default: 0)",  # --seed
                 "(default: face)",  # --crop
                 "(default: 19)"):  # --crf
        assert said in text, said
    assert "40" not in text.split("--steps")[1].split("--")[0]  # not another model's default


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_and_verbose_work_on_either_side_of_the_command(media, tmp_path, capsys, where):
    out = tmp_path / "talk.mp4"
    args = generate(media, out)
    status, stdout, _ = run(["-q", *args] if where == "before" else [*args, "-q"], capsys)
    assert status == 0 and "plan:" not in stdout
    out.unlink()
    status, _, err = run(["-v", *args, "--device", "tpu"] if where == "before" else [*args, "--device", "tpu", "-v"],
                         capsys)
    assert status == 2 and "not a device name" in err


def test_the_plan_line_comes_before_the_work(media, tmp_path, capsys):
    status, stdout, _ = run(generate(media, tmp_path / "talk.mp4"), capsys)
    assert status == 0
    plan = next(line for line in stdout.splitlines() if line.startswith("plan:"))
    for part in ("face region from --mask sample_portrait_mask.png", "crop", "-> 64 px", "10 frames",
                 "1 clip of 12 x 1 ddim steps (1 steps)", "seed 0", "on cpu in float32", "CPU thread"):
        assert part in plan, plan
    assert stdout.index("plan:") < stdout.index("wrote ")


def test_outputs_get_normal_permissions(media, tmp_path, capsys):
    old = os.umask(0o022)
    try:
        out = tmp_path / "made" / "talk.mp4"
        assert run(generate(media, out, "-q"), capsys)[0] == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def test_deterministic_gives_byte_identical_files(media, tmp_path, capsys):
    first, second = tmp_path / "one.mp4", tmp_path / "two.mp4"
    for out in (first, second):
        assert run(generate(media, out, "-q", "--deterministic", "--seed", "7"), capsys)[0] == 0
    assert first.read_bytes() == second.read_bytes()


def test_other_commands_refuse_nonsense_values_in_one_line(tmp_path, capsys):
    cases = [
        (["new-checkpoint", "--preset", "tiny", "--out", str(tmp_path / "a.safetensors"), "--seed", "-3"],
         "argument --seed: must be a whole number >= 0"),
        (["new-checkpoint", "--preset", "huge", "--out", str(tmp_path / "a.safetensors")], "invalid choice: 'huge'"),
        (["info", str(tmp_path / "nope.safetensors")], "nope.safetensors"),
        (["synth", "--out", str(tmp_path / "s"), "--count", "0", "--seconds", "1"],
         "argument --count: must be a whole number >= 1, got '0'"),
        (["synth", "--out", str(tmp_path / "s"), "--count", "1", "--seconds", "-1"], "argument --seconds"),
        (["synth", "--out", str(tmp_path / "s"), "--count", "1", "--seconds", "1", "--size", "15"], "argument --size"),
        (["synth", "--out", str(tmp_path / "s"), "--count", "1", "--seconds", "1", "--speed-range", "1", "0.5"],
         "--speed-range 1 0.5: give LOW <= HIGH"),
        (["evaluate", "--checkpoint", str(DEMO_CHECKPOINT), "--steps", "0"], "argument --steps"),
        (["prepare", "--videos", ".", "--out", str(tmp_path / "d"), "--checkpoint", "x", "--workers", "0"],
         "argument --workers"),
        (["batch", str(tmp_path / "jobs.jsonl"), "--fps", "0"], "argument --fps"),
    ]
    for args, message in cases:
        status, _, err = run(args, capsys)
        assert status == 2, (args, err)
        assert err.startswith(f"emo {args[0]}: error: ") and len(err.strip().splitlines()) == 1, err
        assert message in err, err
    assert left_behind(tmp_path) == []


def test_no_traceback_from_a_fresh_process(media, tmp_path):
    """The same as a user sees it: `python -m emo` in its own process, from another folder."""
    result = subprocess.run([sys.executable, "-m", "emo", *generate(media, tmp_path / "t.mp4", "--fps", "0")],
                            capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "emo generate: error: argument --fps: must be a number > 0 and <= 240, got '0' (see emo generate --help)"]


def test_the_installed_emo_command_is_the_command_line():
    """pyproject's [project.scripts] `emo` (installed by `make setup`: pip install -e .) runs
    emo.cli.run, and only the library is packaged, with its bundled assets."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    from emo import cli

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["scripts"] == {"emo": "emo.cli:run"}
    assert callable(cli.run)
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["emo", "emo.*"]
    assert project["tool"]["setuptools"]["package-data"]["emo"] == ["assets/*"]
    assert "pip install -q --no-deps -e ." in (REPO / "Makefile").read_text()
