"""Option values checked where they are parsed: an argparse `type` that names the value and the
range it must lie in, shared by every command (and by `batch`'s JSON lines)."""

from __future__ import annotations

import argparse
import math


def _number(value: float) -> str:
    """2**63 - 1 as "9223372036854775807", 0.5 as "0.5", 25.0 as "25"."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


class OptionValue:
    """An argparse `type`: a whole number (`kind=int`) or a number (`float`) in a range. A bad
    value raises argparse.ArgumentTypeError naming the value and what is allowed, so the command
    line prints `emo generate: error: argument --fps: must be a number > 0, got '0'`. A batch
    line's JSON value goes through the same check."""

    def __init__(self, kind: type, *, above: float | None = None, at_least: float | None = None,
                 at_most: float | None = None, multiple_of: int | None = None):
        self.kind, self.above, self.at_least, self.at_most = kind, above, at_least, at_most
        self.multiple_of = multiple_of
        self.__name__ = kind.__name__  # argparse names a type by it

    def describe(self) -> str:
        words = ["a whole number" if self.kind is int else "a number"]
        if self.multiple_of:
            words = [f"a positive multiple of {self.multiple_of}"]
        elif self.above is not None:
            words.append(f"> {_number(self.above)}")
        elif self.at_least is not None:
            words.append(f">= {_number(self.at_least)}")
        if self.at_most is not None:
            limit = _number(self.at_most)
            words.append(f"and <= {limit}" if len(words) > 1 else f"<= {limit}")
        return " ".join(words)

    def __call__(self, value):
        problem = f"must be {self.describe()}, got {value!r}"
        if isinstance(value, bool):
            raise argparse.ArgumentTypeError(problem)
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(problem) from None
        if not math.isfinite(number) or (self.kind is int and not number.is_integer()):
            raise argparse.ArgumentTypeError(problem)
        number = self.kind(number) if self.kind is float else int(number)
        if ((self.above is not None and not number > self.above)
                or (self.at_least is not None and number < self.at_least)
                or (self.at_most is not None and number > self.at_most)
                or (self.multiple_of and (number <= 0 or number % self.multiple_of))):
            raise argparse.ArgumentTypeError(problem)
        return number


# Shared by several commands.
FPS = OptionValue(float, above=0, at_most=240)
STEPS = OptionValue(int, at_least=1, at_most=1000)  # the noise schedules have 1000 training steps
SIZE = OptionValue(int, multiple_of=8, at_most=4096)  # the VAE's latent grid is 8x smaller
SPEED = OptionValue(float, at_least=0)  # head motion, degrees per frame
GUIDANCE = OptionValue(float, at_least=0)
SEED = OptionValue(int, at_least=0, at_most=2 ** 63 - 1)
THREADS = OptionValue(int, at_least=1, at_most=1024)
COUNT = OptionValue(int, at_least=1)
SECONDS = OptionValue(float, above=0)
