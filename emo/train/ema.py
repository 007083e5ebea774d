"""Exponential moving average of the trained weights (optional; `ema.enabled`)."""

from __future__ import annotations

import contextlib

import torch


class EMA:
    """shadow <- decay_t * shadow + (1 - decay_t) * param after each optimizer step, with the usual
    warm-up decay_t = min(decay, (1 + step) / (10 + step)) so early weights fade quickly.
    Shadows are float32 on the parameters' device; `state_dict` makes it part of a saved state."""

    def __init__(self, params: dict[str, torch.nn.Parameter], decay: float):
        self.params = params
        self.decay = decay
        self.shadow = {name: p.detach().float().clone() for name, p in params.items()}
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, param in self.params.items():
            self.shadow[name].lerp_(param.detach().float(), 1 - decay)

    @contextlib.contextmanager
    def swapped_in(self):
        """Temporarily put the averaged weights into the model (sampling, export)."""
        saved = {name: p.detach().clone() for name, p in self.params.items()}
        with torch.no_grad():
            for name, param in self.params.items():
                param.copy_(self.shadow[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, param in self.params.items():
                    param.copy_(saved[name])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": {k: v.cpu() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        if set(state["shadow"]) != set(self.shadow):
            raise ValueError("EMA state does not match the trained parameters; was the checkpoint written by "
                             "another stage or `trainable:` list?")
        self.updates = int(state["updates"])
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)
