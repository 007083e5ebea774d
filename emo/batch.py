"""`python -m emo batch JOBS.jsonl`: a queue of generations, one video per line of a JSONL file.

Each line is a JSON object: the portrait, the voice and the output video, plus any of
`generate`'s options in snake_case, e.g.

    {"image": "alice.png", "audio": "hello.wav", "out": "out/alice.mp4", "seed": 3, "speed": 0.7}

Blank lines and lines starting with `#` are skipped. The command line's options (`--checkpoint`,
`--steps`, ...) are the defaults of every line; a line's own value wins. Relative paths in a line
are read from the JSONL file's folder, so a folder of media and its job file can move together.

The whole file is checked before anything runs (a typo on line 900 should not wait for 899
videos): a bad line ends the command with status 2 and writes nothing. A job whose output exists
is finished (videos are written atomically, so an existing file is complete) and is skipped
unless `--overwrite`; an interrupted queue therefore resumes by running the same command again.
A job that fails, for any reason (an undecodable audio file, a GPU out of memory, ...), fails
alone: it is reported with its message, the queue goes on, and the summary at the end lists each
failed line and why; the exit status is then 1.

`accelerate launch -m emo batch JOBS.jsonl` runs one process per GPU (and node): job i of the
file goes to process i % processes, so the split does not depend on timing, and each process
loads the models on its own device.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoints import DEMO_CHECKPOINT
from .pipeline import GenerationCancelled
from .runtime.devices import pick_device, setup_run
from .runtime.jobs import (
    DEMO_NOTE,
    VIDEO_SUFFIXES,
    OptionValue,
    add_job_options,
    add_runtime_options,
    checkpoint_or_demo,
    load_pipeline,
    prepare_job,
    read_job_inputs,
    render_job,
)
from .runtime.output import output_path
from .weights.files import existing_path

REQUIRED_KEYS = ("image", "audio", "out")
PATH_KEYS = ("image", "audio", "out", "checkpoint", "mask", "face_embedding")
INPUT_KEYS = ("image", "audio", "checkpoint", "mask", "face_embedding")  # files that must exist
# The same for the whole run, not per line.
RUN_OPTIONS = ("device", "precision", "threads", "deterministic", "quiet", "verbose")
MAX_REPORTED_PROBLEMS = 10


class JobsFileError(ValueError):
    """A jobs file with bad lines; the message names every one of them (up to a limit)."""


@dataclass
class Job:
    line: int  # 1-based line number in the jobs file, for messages
    index: int  # position among the file's jobs, which picks the process that runs it
    options: argparse.Namespace  # generate's options: the line's values over the command line's

    @property
    def out(self) -> Path:
        return Path(self.options.out)


# ---- reading and checking the jobs file ------------------------------------------------------
def job_option_actions() -> dict[str, argparse.Action]:
    """generate's per-video options by key (`frames_per_clip`, ...), with their types and choices."""
    return {action.dest: action for action in add_job_options(argparse.ArgumentParser(add_help=False))}


def read_jobs(path, defaults: argparse.Namespace) -> list[Job]:
    """Every job of the file, checked; or one JobsFileError naming all bad lines, so that nothing
    runs from a file that is only partly right."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no jobs file at {path}; give a .jsonl file with one JSON object per line")
    actions = job_option_actions()
    jobs, problems = [], []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = text.strip()
        if not text or text.startswith("#"):
            continue
        try:
            options = _job_options(text, actions, defaults, path.parent)
        except (ValueError, FileNotFoundError) as error:
            problems.append(f"line {number}: {error}")
            continue
        jobs.append(Job(line=number, index=len(jobs), options=options))
    problems += _shared_outputs(jobs)
    if problems:
        shown = problems[:MAX_REPORTED_PROBLEMS]
        more = len(problems) - len(shown)
        raise JobsFileError(f"{path.name}: " + "; ".join(shown) + (f"; and {more} more" if more else "")
                            + " - fix these lines; nothing was run")
    if not jobs:
        raise JobsFileError(f"{path.name} holds no jobs; write one JSON object per line, e.g. "
                            '{"image": "portrait.png", "audio": "voice.wav", "out": "talk.mp4"}')
    return jobs


def _job_options(text: str, actions: dict, defaults: argparse.Namespace, folder: Path) -> argparse.Namespace:
    """One line -> generate's options, or a ValueError/FileNotFoundError saying what is wrong."""
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(values, dict):
        raise ValueError(f"expected a JSON object like {{\"image\": ..., \"audio\": ..., \"out\": ...}}, "
                         f"got {type(values).__name__}")
    allowed = (*REQUIRED_KEYS, *actions)
    for key in values:
        if key not in allowed:
            raise ValueError(_unknown_key(key, allowed))
    missing = [key for key in REQUIRED_KEYS if key not in values]
    if missing:
        raise ValueError(f"missing {', '.join(repr(key) for key in missing)}; every line needs "
                         f"{', '.join(REQUIRED_KEYS)}")
    options = {dest: getattr(defaults, dest) for dest in actions}
    for key, value in values.items():
        options[key] = _checked_value(key, value, actions.get(key))
        if key in PATH_KEYS:
            options[key] = str(_from_folder(folder, options[key]))
    options = argparse.Namespace(**options)
    _check_files(options)
    return options


def _unknown_key(key: str, allowed) -> str:
    if key in RUN_OPTIONS:
        return f"{key!r} is the same for the whole run: give --{key} on the command line instead"
    close = difflib.get_close_matches(key.replace("-", "_"), allowed, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key {key!r}; {hint}the keys are {', '.join(allowed)}"


_TYPE_WORDS = {int: "a whole number", float: "a number", str: "a string"}


def _checked_value(key: str, value, action: argparse.Action | None):
    """A line's value for `key`, of the type, in the range and among the choices the command-line
    option takes."""
    check = None if action is None else action.type
    if isinstance(check, OptionValue):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key} must be {check.describe()}, got {json.dumps(value)}")
        try:
            return check(value)
        except argparse.ArgumentTypeError as error:
            raise ValueError(f"{key} {error}") from None
    kind = str if check is None else check
    accepted = (int, float) if kind is float else kind
    if isinstance(value, bool) or not isinstance(value, accepted) or (kind is str and not value.strip()):
        raise ValueError(f"{key} must be {_TYPE_WORDS[kind]}, got {json.dumps(value)}")
    if action is not None and action.choices is not None and value not in action.choices:
        raise ValueError(f"{key} must be one of {', '.join(action.choices)}, got {json.dumps(value)}")
    return kind(value)


def _from_folder(folder: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else folder / path


def _check_files(options: argparse.Namespace) -> None:
    """The checks generate makes before loading a model: the output's suffix and folder, and
    that every input file is there."""
    output_path(options.out, VIDEO_SUFFIXES, option="out")
    checkpoint_or_demo(options.checkpoint)  # no checkpoint: the demo model must be there
    for key in INPUT_KEYS:
        value = getattr(options, key)
        if value is not None:
            existing_path(value, key, "check the path (a line's relative paths start at the jobs file's folder)")


def _shared_outputs(jobs: list[Job]) -> list[str]:
    """Two jobs writing one file would overwrite each other (or race, across processes)."""
    first_line: dict[Path, int] = {}
    problems = []
    for job in jobs:
        key = job.out.resolve()
        if key in first_line:
            problems.append(f"lines {first_line[key]} and {job.line} both write {job.out}; give each job its "
                            "own \"out\"")
        else:
            first_line[key] = job.line
    return problems


# ---- processes -------------------------------------------------------------------------------
@dataclass
class Processes:
    """This process's place among those `accelerate launch` started (one, when run plainly)."""

    index: int
    count: int
    device: object  # torch.device
    state: object = None  # accelerate's PartialState, with several processes

    @property
    def is_main(self) -> bool:
        return self.index == 0

    @property
    def label(self) -> str:
        return f"[process {self.index}/{self.count}] " if self.count > 1 else ""

    def wait(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def close(self) -> None:
        """Tear the process group down before the interpreter exits: left to exit-time cleanup,
        gloo's threads can abort the process ("terminate called without an active exception")
        after all the work is done, and the launcher then reports the run as failed."""
        if self.state is not None and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    def gather(self, item) -> list:
        """`item` from every process, in process order."""
        if self.state is None:
            return [item]
        from accelerate.utils import gather_object

        return gather_object([item])


def current_processes(device: str) -> Processes:
    """One plain process needs no accelerate state; under `accelerate launch` (WORLD_SIZE > 1)
    PartialState says which process this is and which device it owns."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Processes(index=0, count=1, device=pick_device(device))
    from accelerate import PartialState

    # Without GPUs the processes talk over gloo, which accelerate uses only when asked for the CPU.
    state = PartialState(cpu=not torch.cuda.is_available())
    if state.num_processes != world:
        raise ValueError(f"accelerate started {world} processes but set up {state.num_processes}; "
                         "run `accelerate config` again or pass --multi_gpu to accelerate launch")
    chosen = state.device if device == "auto" else torch.device(device)
    return Processes(index=state.process_index, count=state.num_processes, device=chosen, state=state)


# ---- running ---------------------------------------------------------------------------------
class PipelineCache:
    """The model of the job at hand. A process's jobs are ordered by checkpoint, so each model is
    loaded once, and only one is in memory at a time."""

    def __init__(self, device, precision: str):
        self.device, self.precision = device, precision
        self.path: Path | None = None
        self.pipeline = None

    def get(self, checkpoint: Path):
        path = Path(checkpoint).resolve()
        if path != self.path:
            self.path, self.pipeline = None, None  # free the old model before loading the next
            _free_device_memory(self.device)
            self.pipeline = load_pipeline(path, self.device, self.precision)
            self.path = path
        return self.pipeline


def _free_device_memory(device) -> None:
    if getattr(device, "type", None) == "cuda":
        torch.cuda.empty_cache()


def _checkpoint_of(job: Job) -> Path:
    return checkpoint_or_demo(job.options.checkpoint).resolve()


def grouped_by_checkpoint(jobs: list[Job]) -> list[Job]:
    """File order within each checkpoint, checkpoints in order of first use: one load each."""
    first_use: dict[Path, int] = {}
    for job in jobs:
        first_use.setdefault(_checkpoint_of(job), len(first_use))
    return sorted(jobs, key=lambda job: first_use[_checkpoint_of(job)])


@dataclass
class Tally:
    """What one process did with its jobs; gathered on the main process for the summary."""

    done: list[int] = field(default_factory=list)  # line numbers
    failed: list[int] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)  # line -> what went wrong


def run_job(job: Job, pipelines: PipelineCache, on_progress, say=print, deterministic: bool = False):
    """One video, exactly as `generate` makes it; `say` gets its notes. Returns its PreparedJob."""
    inputs = read_job_inputs(job.options)
    video = prepare_job(pipelines.get(_checkpoint_of(job)), job.options, inputs)
    for note in video.notes:
        say(note)
    render_job(video, on_progress, deterministic=deterministic)
    return video


def _failure(error: Exception) -> str:
    """A job's error in one line: the message of the errors users cause, the type too otherwise."""
    if isinstance(error, (ValueError, FileNotFoundError)):
        return str(error)
    if isinstance(error, torch.OutOfMemoryError):
        return f"out of memory ({str(error).splitlines()[0]}); try a smaller size or frames_per_clip"
    return f"{type(error).__name__}: {error}"


def run_jobs(jobs: list[Job], processes: Processes, args) -> Tally:
    """This process's jobs, one after the other, under a progress bar of its own."""
    from tqdm import tqdm

    tally = Tally()
    pipelines = PipelineCache(processes.device, args.precision)
    with tqdm(total=len(jobs), unit="video", desc=f"{processes.label}batch", position=processes.index,
              disable=args.quiet) as bar:
        for job in jobs:
            where = f"{processes.label}line {job.line} -> {job.out.name}"
            bar.set_postfix_str(f"line {job.line}")

            def on_progress(p, line=job.line):
                bar.set_postfix_str(f"line {line} clip {p.clip + 1}/{p.num_clips} step {p.step}/{p.num_steps}")

            try:
                video = run_job(job, pipelines, on_progress, lambda note, where=where: _say(bar, f"{where}: {note}",
                                                                                          sys.stderr),
                                deterministic=args.deterministic)
            except GenerationCancelled:
                raise
            except Exception as error:  # one job's failure, whatever it is, must not end the queue
                message = _failure(error)
                tally.failed.append(job.line)
                tally.errors[job.line] = message
                _say(bar, f"{where} failed: {message}", sys.stderr)
                _free_device_memory(processes.device)
                if args.stop_on_error:
                    break
            else:
                tally.done.append(job.line)
                _say(bar, f"{where} done ({video.summary()})", sys.stdout)
            bar.update(1)
    return tally


def _say(bar, text: str, stream) -> None:
    """A line above the progress bars, written at once (processes share the terminal)."""
    bar.write(text, file=stream)
    stream.flush()


def _summary(tallies: list[Tally], skipped: int, to_run: int) -> str:
    """One line of counts, then one line per failed job with its error."""
    done = sum(len(tally.done) for tally in tallies)
    failed = sorted(line for tally in tallies for line in tally.failed)
    errors = {line: message for tally in tallies for line, message in tally.errors.items()}
    parts = [f"{done} done", f"{skipped} skipped (already done)", f"{len(failed)} failed"]
    if failed:
        parts[-1] += f" (line{'s' if len(failed) > 1 else ''} {', '.join(map(str, failed))})"
    not_run = to_run - done - len(failed)
    if not_run:
        parts.append(f"{not_run} not run (--stop-on-error)")
    return "\n".join(["batch: " + ", ".join(parts)] + [f"  line {line} failed: {errors.get(line, '?')}"
                                                       for line in failed])


def _announce(pending: list[Job], skipped: int, processes: int) -> None:
    spread = f" over {processes} processes" if processes > 1 else ""
    print(f"{len(pending)} to run, {skipped} already done{spread}", flush=True)
    if any(job.options.checkpoint is None for job in pending):
        print(DEMO_NOTE.format(name=DEMO_CHECKPOINT.name), flush=True)


def cmd_batch(args) -> int:
    processes = current_processes(args.device)
    setup_run(args.threads, args.deterministic)
    try:
        return _run_batch(args, processes)
    finally:
        processes.close()


def _run_batch(args, processes: Processes) -> int:
    try:
        jobs = read_jobs(args.jobs, args)
    except (ValueError, FileNotFoundError):
        if not processes.is_main:
            return 0  # every process read the same file; the main process says what is wrong
        raise
    pending = [job for job in jobs if args.overwrite or not job.out.exists()]
    skipped = len(jobs) - len(pending)
    if processes.is_main:
        _announce(pending, skipped, processes.count)
    mine = grouped_by_checkpoint([job for job in pending if job.index % processes.count == processes.index])
    processes.wait()  # every process has looked at the outputs before any is written
    try:
        tally = run_jobs(mine, processes, args)
    except (KeyboardInterrupt, GenerationCancelled):
        print(f"emo batch: {processes.label}interrupted; the video in progress was not written, finished ones are "
              "kept; run the same command again to go on", file=sys.stderr)
        return 130
    processes.wait()
    tallies = processes.gather(tally)
    if not processes.is_main:
        return 0  # the main process's status is the run's: one failure report from the launcher
    print(_summary(tallies, skipped, len(pending)), flush=True)
    if args.summary:
        write_summary(args.summary, jobs, tallies, skipped=[job.line for job in jobs if job not in pending])
    return 1 if any(tally.failed for tally in tallies) else 0


def write_summary(path, jobs: list[Job], tallies: list[Tally], skipped: list[int]) -> None:
    """--summary: every line's outcome as JSON, {"done": [...], "skipped": [...], "failed":
    {line: message}, "not_run": [...], "outputs": {line: path}}, written atomically (also when every
    job failed)."""
    from .runtime.output import atomic_output

    done = sorted(line for tally in tallies for line in tally.done)
    errors = {line: message for tally in tallies for line, message in tally.errors.items()}
    finished = set(done) | set(errors) | set(skipped)
    report = {"done": done, "skipped": sorted(skipped), "failed": {str(line): errors[line] for line in sorted(errors)},
              "not_run": sorted(job.line for job in jobs if job.line not in finished),
              "outputs": {str(job.line): str(job.out) for job in jobs}}
    with atomic_output(path) as temp:
        temp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def add_commands(commands) -> None:
    batch = commands.add_parser(
        "batch", help="a queue of generations from a JSONL file (also under accelerate launch)",
        description="Run one generation per line of a JSONL file: {\"image\": ..., \"audio\": ..., \"out\": ..., "
                    "and any generate option in snake_case}. Finished outputs are skipped. "
                    "`accelerate launch -m emo batch JOBS.jsonl` spreads the jobs over all GPUs and nodes.")
    batch.add_argument("jobs", help="JSONL file, one job per line; relative paths start at its folder")
    batch.add_argument("--overwrite", action="store_true", help="run jobs whose output exists too")
    batch.add_argument("--stop-on-error", action="store_true",
                       help="stop at the first failed job (default: report it and go on)")
    batch.add_argument("--summary", default=None, metavar="FILE",
                       help="also write each line's outcome (done, skipped, failed with its message, not run) to "
                            "this JSON file, even when every job fails (default: the summary is printed only)")
    options = batch.add_argument_group("defaults for every job (a line's own value wins)")
    add_job_options(options)
    add_runtime_options(batch)
    batch.set_defaults(run=cmd_batch)
