"""One GPU run, time-boxed, for a lent machine that can download nothing: our full-size benchmark,
then Hallo's own code beside ours.

    python3 bench/gpu_run.py --out DIR [--budget 450]
    EMO_GPU_RUN_TINY=1 python3 bench/gpu_run.py --out DIR     # the whole script, tiny sizes, CPU

The parts, in order, each in its own process with the time that is left; a part that would
overrun is skipped (or killed) and the report says so:
1. wheels: what `bash bench/gpu_wheels.sh HALLO_CHECKOUT` put in the ignored folders goes in
   with `pip install --no-index --no-deps --target`: `.whl/*.whl` (ours: diffusers) into a
   fresh temporary folder, `.hallo/wheels/*.whl` (diffusers 0.27.2, Hallo's pin) into another;
   each side runs with its folder first on PYTHONPATH. No `.whl/`: nothing is installed.
2. ours (`gpu_run.py ours`): the sd15 preset with random weights, 512 px, two clips of 12
   frames (4 motion frames), audio features given (no wav2vec2); bf16, then fp16; 40 DDIM steps
   with guidance 3.5, and 6 steps without. Per row: seconds per frame end to end (ReferenceNet,
   backbone, VAE decode, the motion frames' re-encode), peak GPU memory, TFLOP per frame (one
   ReferenceNet call per clip and one backbone call per step, each counted by
   torch.utils.flop_counter.FlopCounterMode on a call the pipeline made) and the achieved
   TFLOP/s. Rows go to DIR/ours.jsonl as they finish.
3. hallo: bench/vs_hallo.py at full size (Hallo's SD1.5 networks from `.hallo/src`, the same
   random weights on both sides, 16 frames, guidance, 3 steps) in fp16 (Hallo's inference dtype),
   bf16, then fp32; its JSON line for each goes to DIR/vs_hallo.jsonl.
4. report (`gpu_run.py report --out DIR`): DIR/RESULTS_gpu.md, DIR/results_gpu.json, and the
   short table, printed last. Every part's own output is in DIR/gpu_run.log.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
TINY = os.environ.get("EMO_GPU_RUN_TINY", "") not in ("", "0")
GOALS = {"s_per_frame_40_cfg": 0.3, "s_per_frame_6": 0.05, "peak_gib": 12.0}
HALLO_DTYPES = ("fp16", "bf16", "fp32")
REPORT_RESERVE_S = 15.0  # kept back for the report


# ---- 1. wheels -------------------------------------------------------------------------------

def install_wheels(folder: Path, prefix: str, log) -> str | None:
    """pip install every wheel of `folder` into a new temporary folder; returns that folder, or
    None when there are none. Raises when pip fails (two versions of one package, a bad wheel)."""
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        return None
    target = tempfile.mkdtemp(prefix=prefix)
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
               "--no-cache-dir", "--disable-pip-version-check", "--target", target, *map(str, wheels)]
    done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"gpu_run: pip could not install the wheels of {folder} (exit {done.returncode}); "
                         f"see gpu_run.log")
    return target


# ---- 2. ours ---------------------------------------------------------------------------------

def _inputs(config, frames: int, size: int):
    import torch

    from emo.audio import AudioFeatures

    generator = torch.Generator().manual_seed(1)
    audio = AudioFeatures(torch.randn(frames, config.audio.num_layers, config.audio.hidden_size, generator=generator),
                          fps=config.defaults.fps, sample_rate=16000,
                          waveform=torch.zeros(1, math.ceil(frames / config.defaults.fps * 16000)))
    image = torch.rand(size, size, 3, generator=generator)
    mask = torch.zeros(size, size)
    mask[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    return image, audio, mask


def count_flops(pipe, settings, image, audio, mask) -> dict:
    """FLOPs of one ReferenceNet call and one backbone call as the pipeline makes them: the calls
    of a 1-step clip are recorded (the clip is also the warm-up), then re-run under
    FlopCounterMode. {"reference_net": flops, "backbone": flops}."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    calls, originals = {}, {}
    for name in ("reference_net", "backbone"):
        module = getattr(pipe.model, name)
        originals[name] = module.forward

        def capture(*args, _name=name, **kwargs):
            calls.setdefault(_name, (args, kwargs))
            return originals[_name](*args, **kwargs)
        module.forward = capture
    try:
        next(pipe.iter_clips(image, audio, face_mask=mask, settings=replace(settings, steps=1)))
    finally:
        for name in originals:
            del getattr(pipe.model, name).forward  # back to the class's forward
    flops = {}
    with torch.inference_mode():
        for name, (args, kwargs) in calls.items():
            with FlopCounterMode(display=False) as counter:
                getattr(pipe.model, name)(*args, **kwargs)
            flops[name] = float(counter.get_total_flops())
    return flops


def run_row(pipe, settings, image, audio, mask, device) -> dict:
    """One measured generation of every clip of `audio` with `settings`."""
    import torch

    from benchmark import StageTimer, device_peak, synchronize

    flops = count_flops(pipe, settings, image, audio, mask)
    timer = StageTimer(pipe.model, device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    start = time.perf_counter()
    frames = sum(chunk.shape[0] for chunk in pipe.iter_clips(image, audio, face_mask=mask, settings=settings))
    synchronize(device)
    total = time.perf_counter() - start
    timer.close()
    work = timer.calls["ReferenceNet"] * flops["reference_net"] + timer.calls["backbone"] * flops["backbone"]
    networks = timer.seconds["ReferenceNet"] + timer.seconds["backbone"]
    peak = device_peak(device)
    return {
        "s_per_frame": total / frames, "seconds": total, "frames": frames, "clips": timer.calls["ReferenceNet"],
        "backbone_calls": timer.calls["backbone"],
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "tflop_reference_call": flops["reference_net"] / 1e12, "tflop_backbone_call": flops["backbone"] / 1e12,
        "tflop_per_frame": work / frames / 1e12,
        "tflops_networks": work / networks / 1e12, "tflops_end_to_end": work / total / 1e12,
        "percent_of_peak": 100 * work / networks / 1e12 / peak if peak else None,
        "share": {k: v / total for k, v in timer.seconds.items()},
    }


def ours(args) -> int:
    """Part 2: rows of our full-size benchmark, skipped (with the reason) when the budget would
    not hold them."""
    import torch

    from emo.model import EMOModel
    from emo.pipeline import EMOPipeline, GenerationSettings

    started = time.perf_counter()
    device = torch.device(args.device)
    preset, size, steps = ("tiny", 64, (4, 2)) if TINY else ("sd15", 512, (40, 6))
    model = EMOModel.from_preset(preset, seed=0, device=device)
    frames = 2 * model.config.defaults.frames_per_clip
    image, audio, mask = _inputs(model.config, frames, size)
    out = Path(args.out) / "ours.jsonl"
    per_call = None  # seconds of one backbone call with guidance, from the first row
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    for dtype in ("bf16", "fp16"):
        pipe = EMOPipeline(model, device=device, dtype=dtype)
        for label, n, guidance in ((f"{steps[0]} steps + CFG", steps[0], 3.5), (f"{steps[1]} steps", steps[1], 1.0)):
            settings = GenerationSettings(size=size, steps=n, guidance_scale=guidance, seed=0, decode_chunk_size=8)
            row = {"preset": preset, "size": size, "frames": frames, "dtype": dtype, "mode": label, "steps": n,
                   "guidance": guidance, "device": name, "torch": torch.__version__}
            left = args.budget - (time.perf_counter() - started)
            needed = (2 + 2 * n) * per_call * 1.5 + 15 if per_call else 60  # warm-up clip + two clips
            if left < needed:
                row["skipped"] = f"budget: {left:.0f} s left, about {needed:.0f} s needed"
            else:
                row.update(run_row(pipe, settings, image, audio, mask, device))
                if per_call is None:
                    per_call = row["seconds"] * row["share"]["backbone"] / row["backbone_calls"]
            print(json.dumps(row), flush=True)
            with out.open("a") as file:
                file.write(json.dumps(row) + "\n")
    return 0


# ---- 4. report -------------------------------------------------------------------------------

def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip().startswith("{")]


def _f(value, fmt=".3f") -> str:
    return "-" if value is None else format(value, fmt)


def ours_table(rows: list[dict]) -> list[str]:
    lines = ["| dtype | mode | s/frame | peak GiB | TFLOP/frame | TFLOP/s networks | TFLOP/s end to end "
             "| % of peak | backbone | VAE |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['dtype']} | {r['mode']} | skipped: {r['skipped']} | | | | | | | |")
            continue
        lines.append(f"| {r['dtype']} | {r['mode']} | {_f(r['s_per_frame'])} | {_f(r['peak_gib'], '.2f')} | "
                     f"{_f(r['tflop_per_frame'], '.2f')} | {_f(r['tflops_networks'], '.1f')} | "
                     f"{_f(r['tflops_end_to_end'], '.1f')} | {_f(r['percent_of_peak'], '.1f')} | "
                     f"{r['share']['backbone']:.0%} | {r['share']['VAE']:.0%} |")
    return lines


def hallo_table(rows: list[dict]) -> list[str]:
    lines = ["| dtype | ours step s | Hallo step s | Hallo/ours step | ours clip s | Hallo clip s | Hallo/ours clip "
             "| ours peak MiB | Hallo peak MiB | max rel. L2 | equal |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for v in rows:
        if "skipped" in v:
            lines.append(f"| {v['dtype']} | skipped: {v['skipped']} | | | | | | | | | |")
            continue
        o, h = v["ours"], v["hallo"]
        lines.append(f"| {v['dtype']} | {o['step_s']:.3f} | {h['step_s']:.3f} | {v['ratio_step']:.2f} | "
                     f"{o['clip_s']:.3f} | {h['clip_s']:.3f} | {v['ratio_clip']:.2f} | {o['peak_mb']:.0f} | "
                     f"{h['peak_mb']:.0f} | {v['max_rel_diff']:.1e} | {v['equal']} |")
    return lines


def report(args) -> int:
    folder = Path(args.out)
    rows, versus = _read_jsonl(folder / "ours.jsonl"), _read_jsonl(folder / "vs_hallo.jsonl")
    state = json.loads((folder / "state.json").read_text()) if (folder / "state.json").is_file() else {}
    notes = state.get("notes", [])
    lines = ["## GPU run (bench/gpu_run.py)", ""]
    if state.get("machine"):
        lines += [f"Machine: {state['machine']}. Parts: "
                  + ", ".join(f"{k} {v:.0f} s" for k, v in state.get("part_seconds", {}).items()) + ".", ""]
    if rows:
        first = rows[0]
        lines += [f"Ours: `{first['preset']}` preset, random weights, {first['size']} px, {first['frames']} frames "
                  f"in clips of the preset's length, on {first['device']}. Goals: <= {GOALS['s_per_frame_40_cfg']} "
                  f"s/frame at 40 steps + CFG, <= {GOALS['s_per_frame_6']} s/frame at 6 steps, "
                  f"<= {GOALS['peak_gib']} GiB.", "", *ours_table(rows)]
    if versus:
        lines += ["", "Beside Hallo (bench/vs_hallo.py: Hallo's networks and ours with the same random weights, "
                  "one clip with guidance; step = ReferenceNet + one backbone call; Hallo/ours > 1: ours is "
                  "faster; equal: both outputs within the dtype's tolerance):", "", *hallo_table(versus)]
    if notes:
        lines += ["", "Notes:", *[f"- {n}" for n in notes]]
    text = "\n".join(lines) + "\n"
    (folder / "RESULTS_gpu.md").write_text(text)
    (folder / "results_gpu.json").write_text(json.dumps({**state, "ours": rows, "vs_hallo": versus}, indent=1))
    print(text, flush=True)
    return 0


# ---- the whole run ---------------------------------------------------------------------------

class Run:
    """The parts of one run against one deadline; each part's output goes to DIR/gpu_run.log."""

    def __init__(self, out: Path, budget: float):
        self.out, self.deadline = out, time.monotonic() + budget
        self.log = (out / "gpu_run.log").open("a")
        self.state = {"notes": [], "part_seconds": {}}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def note(self, text: str) -> None:
        self.state["notes"].append(text)
        print(f"gpu_run: {text}", flush=True)

    def save(self) -> None:
        (self.out / "state.json").write_text(json.dumps(self.state, indent=1))

    def part(self, name: str, command: list, env: dict, timeout: float) -> tuple[int | None, str]:
        """Run one part; returns (exit code or None when it was stopped at `timeout`, its stdout)."""
        self.log.write(f"\n==== {name}: {' '.join(command)}\n")
        self.log.flush()
        start = time.monotonic()
        # Its own process group, so that a part stopped at its time also stops the processes it started.
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                   start_new_session=True)
        try:
            stdout, _ = process.communicate(timeout=max(timeout, 1.0))
            code = process.returncode
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, _ = process.communicate()
            code = None
        self.log.write(stdout)
        self.log.flush()
        seconds = time.monotonic() - start
        self.state["part_seconds"][name] = self.state["part_seconds"].get(name, 0.0) + seconds
        status = "stopped at its time limit" if code is None else f"exit {code}"
        print(f"gpu_run: {name}: {status} after {seconds:.0f} s", flush=True)
        if code:
            self.log.flush()
            tail = (self.out / "gpu_run.log").read_text().splitlines()[-25:]
            print("\n".join(f"    {line}" for line in tail), flush=True)
        return code, stdout


def machine_line(device: str) -> str:
    import torch

    if device == "cuda" and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        gpu = f"{p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs"
    else:
        gpu = "no GPU (CPU run)"
    return (f"{gpu}; {os.cpu_count()} CPU threads; Python {platform.python_version()}, torch {torch.__version__}"
            f" (CUDA {torch.version.cuda})")


def run_all(args) -> int:
    out = Path(args.out)
    run = Run(out, args.budget)
    for stale in ("ours.jsonl", "vs_hallo.jsonl", "state.json"):
        (out / stale).unlink(missing_ok=True)
    device = "cpu" if TINY else args.device
    run.state["machine"] = machine_line(device)
    run.state["tiny"] = TINY

    start = time.monotonic()
    ours_site = install_wheels(ROOT / ".whl", "emo_site_", run.log)
    hallo_site = install_wheels(ROOT / ".hallo" / "wheels", "emo_site_hallo_", run.log)
    run.state["part_seconds"]["wheels"] = time.monotonic() - start
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if ours_site:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (ours_site, env.get("PYTHONPATH")) if p)
    if TINY:
        env.setdefault("OMP_NUM_THREADS", "1")
    run.note(f"wheels: ours {'from .whl' if ours_site else 'none (the environment has them)'}, "
             f"Hallo's {'from .hallo/wheels' if hallo_site else 'none (its environment has them)'}")

    # Ours gets at most 45% of what is left, Hallo the rest (a full-size H200 run needs about
    # 1-2 minutes for each).
    ours_time = 0.45 * (run.left() - REPORT_RESERVE_S)
    code, _ = run.part("ours", [sys.executable, str(BENCH / "gpu_run.py"), "ours", "--out", str(out),
                                "--device", device, "--budget", f"{ours_time - 10:.0f}"], env, ours_time)
    if code != 0:
        run.note("ours: " + ("stopped at its time limit; rows finished before it are kept" if code is None
                             else f"failed (exit {code}); see gpu_run.log"))
    run.save()

    checkout = ROOT / ".hallo" / "src"
    if not (checkout / "hallo" / "models" / "unet_3d.py").is_file():
        run.note(f"hallo: skipped: no Hallo checkout at {checkout} (bench/gpu_wheels.sh copies one there)")
    else:
        hallo_part(run, env, checkout, hallo_site, device)
    run.save()
    code, _ = run.part("report", [sys.executable, str(BENCH / "gpu_run.py"), "report", "--out", str(out)], env,
                       max(run.left() + REPORT_RESERVE_S, 10))
    if code == 0:
        # The report's table, last on the console.
        print((out / "RESULTS_gpu.md").read_text(), flush=True)
    return 0 if code == 0 else 1


def hallo_part(run: Run, env: dict, checkout: Path, hallo_site: str | None, device: str) -> None:
    shape = (["--arch", "tiny", "--size", "64", "--frames", "8", "--steps", "2"] if TINY
             else ["--arch", "sd15", "--size", "512", "--frames", "16", "--steps", "3"])
    last = None  # seconds of the previous dtype
    for dtype in HALLO_DTYPES:
        left = run.left() - REPORT_RESERVE_S
        if left < (1.3 * last if last else 30):
            row = {"dtype": dtype, "skipped": f"budget: {left:.0f} s left"
                   + (f", the previous dtype took {last:.0f} s" if last else "")}
        else:
            command = [sys.executable, str(BENCH / "vs_hallo.py"), "--hallo", str(checkout), "--device", device,
                       "--dtype", dtype, *shape, "--json"]
            if hallo_site:
                command += ["--hallo-pythonpath", hallo_site]
            start = time.monotonic()
            code, stdout = run.part(f"hallo {dtype}", command, env, left)
            last = time.monotonic() - start
            lines = [line for line in stdout.splitlines() if line.startswith("{")]
            if lines:
                row = json.loads(lines[-1])
                if not row["equal"]:
                    run.note(f"hallo {dtype}: outputs differ beyond the tolerance (max rel. L2 "
                             f"{row['max_rel_diff']:.2e})")
            else:
                row = {"dtype": dtype, "skipped": "stopped at its time limit" if code is None
                       else f"failed (exit {code}); see gpu_run.log"}
        with (run.out / "vs_hallo.jsonl").open("a") as file:
            file.write(json.dumps(row) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="all", choices=("all", "ours", "report"))
    parser.add_argument("--out", default=os.environ.get("OUT"), help="output folder (default: $OUT)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--budget", type=float, default=450.0,
                        help="seconds for everything (all) or for the rows (ours)")
    args = parser.parse_args(argv)
    if not args.out:
        parser.error("give --out DIR (or set OUT)")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.what != "all":
        sys.path.insert(0, str(ROOT))
        sys.path.insert(0, str(BENCH))
    return {"all": run_all, "ours": ours, "report": report}[args.what](args)


if __name__ == "__main__":
    sys.exit(main())
