"""CPU threads: the demo job's wall time alone and beside a busy neighbour, before and after.

    python bench/threads.py [--seconds 2] [--repeats 2] [--setups before after deterministic]
                            [--conditions alone busy] [--json out.json]

The job is `emo generate` on the bundled demo model, sample portrait (with its mask) and the
first `--seconds` of the sample voice, each run in a fresh process. Two set-ups:

- before: what the command did before it chose threads itself: PyTorch's own thread count and
  OpenMP's default wait policy (idle threads spin for a while before they sleep). Reproduced by
  importing torch before emo.cli, so OpenMP starts without the OMP_WAIT_POLICY emo.cli sets.
- after:  `emo generate` as shipped: threads from the CPUs this process may use (affinity and
  cgroup quota, at most 16) and OMP_WAIT_POLICY=PASSIVE (idle threads sleep).

- deterministic: `emo generate --deterministic` (one CPU thread, a single-threaded encoder):
  what byte-identical files cost.

and two conditions: alone, and beside a busy neighbour (one CPU-bound process per usable CPU,
like a build running `make -jN` on the same machine). Reported: the job's wall time and its
CPU time (user + system), the fastest of `--repeats` runs.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "emo" / "assets"

# "before": torch (and its OpenMP) is loaded first, with the environment as the user left it;
# --threads then pins PyTorch's own default, so emo's choice does not apply.
BEFORE = ("import sys, torch; threads = torch.get_num_threads(); from emo.cli import main; "
          "sys.exit(main(sys.argv[1:] + ['--threads', str(threads)]))")
AFTER = "import sys; from emo.cli import main; sys.exit(main(sys.argv[1:]))"
CONDITIONS = {"alone": "alone", "busy": "busy neighbour"}


def job_args(out: Path, seconds: float) -> list[str]:
    return ["generate", "--quiet", "--image", str(ASSETS / "sample_portrait.png"),
            "--mask", str(ASSETS / "sample_portrait_mask.png"), "--audio", str(ASSETS / "sample_voice.wav"),
            "--duration", f"{seconds:g}", "--out", str(out)]


def run_job(setup: str, seconds: float, folder: Path) -> dict:
    """One job in a fresh process: wall seconds and CPU seconds (user + system) of the child."""
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)  # each set-up picks its own thread count
    env.pop("EMO_NUM_THREADS", None)
    if setup == "before":
        env.pop("OMP_WAIT_POLICY", None)
    code = BEFORE if setup == "before" else AFTER
    out = folder / f"{setup}.mp4"
    extra = ["--deterministic"] if setup == "deterministic" else []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, *job_args(out, seconds), *extra], cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu}


def _spin(stop) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


class BusyNeighbour:
    """One CPU-bound process per usable CPU, for the length of a `with` block."""

    def __init__(self, processes: int):
        self.count = processes
        self.stop = multiprocessing.Event()
        self.workers: list[multiprocessing.Process] = []

    def __enter__(self):
        for _ in range(self.count):
            worker = multiprocessing.Process(target=_spin, args=(self.stop,), daemon=True)
            worker.start()
            self.workers.append(worker)
        time.sleep(0.5)  # let them reach full load
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for worker in self.workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.terminate()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds of the sample voice (default 2)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per cell; the fastest counts (default 2)")
    parser.add_argument("--setups", nargs="+", default=["before", "after"],
                        choices=("before", "after", "deterministic"), help="(default: before after)")
    parser.add_argument("--conditions", nargs="+", default=["alone", "busy"], choices=("alone", "busy"),
                        help="(default: alone busy)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO))
    from emo.runtime.devices import default_threads, usable_cpus

    os.environ.pop("OMP_NUM_THREADS", None)
    os.environ.pop("EMO_NUM_THREADS", None)
    cpus = usable_cpus()
    threads_after, why = default_threads()
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                           capture_output=True, text=True, check=True)
    threads_before = int(probe.stdout)
    print(f"{cpus} usable CPUs (os.cpu_count() {os.cpu_count()}); threads before: {threads_before} (PyTorch's "
          f"default), after: {threads_after} ({why}); demo job: {args.seconds:g} s of voice")

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for condition in args.conditions:
            for setup in args.setups:
                runs = []
                for _ in range(args.repeats):
                    if condition == "alone":
                        runs.append(run_job(setup, args.seconds, Path(folder)))
                    else:
                        with BusyNeighbour(cpus):
                            runs.append(run_job(setup, args.seconds, Path(folder)))
                best = min(runs, key=lambda run: run["wall_s"])
                row = {"condition": CONDITIONS[condition], "setup": setup, **best,
                       "all_wall_s": [r["wall_s"] for r in runs]}
                rows.append(row)
                print(f"{CONDITIONS[condition]:15s} {setup:13s} wall {best['wall_s']:6.1f} s  "
                      f"cpu {best['cpu_s']:6.1f} s  "
                      f"(runs: {', '.join(f'{r:.1f}' for r in row['all_wall_s'])})", flush=True)

    print("\n| condition | " + " | ".join(f"{setup}: wall / CPU" for setup in args.setups) + " |\n|---|"
          + "---|" * len(args.setups))
    for condition in args.conditions:
        cells = [next(r for r in rows if r["condition"] == CONDITIONS[condition] and r["setup"] == setup)
                 for setup in args.setups]
        print(f"| {CONDITIONS[condition]} | " + " | ".join(f"{c['wall_s']:.1f} s / {c['cpu_s']:.1f} s" for c in cells)
              + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpus": cpus, "threads_before": threads_before,
                                               "threads_after": threads_after, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
