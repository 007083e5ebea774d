"""Diffusers schedulers by name, built from the noise schedule a checkpoint was trained with."""

from __future__ import annotations

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)

# SD1.5's linear-beta noise schedule rescaled to zero terminal SNR, v-prediction, trailing
# timestep spacing (Lin et al. 2023): what Hallo (configs/inference/default.yaml) and EchoMimic
# (configs/inference/inference_v2.yaml) both sample with.
SD15_ZERO_SNR_V_PREDICTION = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "linear",
    "clip_sample": False,
    "steps_offset": 1,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "timestep_spacing": "trailing",
}

# name -> (class, extra config). DDIM is the paper's sampler; DPM-Solver++ and UniPC reach
# similar quality in fewer steps.
SCHEDULERS = {
    "ddim": (DDIMScheduler, {}),
    "ddpm": (DDPMScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
    "dpmpp_2m_karras": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "unipc": (UniPCMultistepScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_ancestral": (EulerAncestralDiscreteScheduler, {}),
    "lms": (LMSDiscreteScheduler, {}),
    "pndm": (PNDMScheduler, {"skip_prk_steps": True}),
}


def make_scheduler(name: str, noise_schedule: dict):
    """A fresh scheduler `name` on the model's noise schedule (its config's `scheduler` dict)."""
    try:
        cls, extra = SCHEDULERS[name]
    except KeyError:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {sorted(SCHEDULERS)}") from None
    return cls.from_config({**noise_schedule, **extra})
