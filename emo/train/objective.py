"""The training objective: EMO's denoising loss on one batch, as one `nn.Module` that accelerate
wraps (DDP, mixed precision).

It holds the five networks that can train (the VAE and wav2vec2 stay outside: they are frozen and
their outputs are computed before, see `Trainer.batch_to_device`). The forward pass mirrors
`emo.pipeline.EMOPipeline.iter_clips` step for step, so training and inference see the conditions
the same way:
  ReferenceNet([reference, motion frames]) -> reference features (motion zeros = first clip)
  audio windows -> audio tokens (zero tokens = audio dropped, as the unconditional branch)
  speeds -> speed embedding (stage 3 only; stages 1-2 have no speed layers yet)
  face mask -> face features
  noisy latents, t -> backbone -> predicted noise; loss = MSE to the noise (or to v),
with the noise schedule of the model's config (SD1.5's scaled-linear, epsilon prediction).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from torch import nn

from ..model import EMOModel
from .stages import Stage


class DenoisingObjective(nn.Module):
    def __init__(self, model: EMOModel, stage: Stage):
        super().__init__()
        self.reference_net = model.reference_net
        self.backbone = model.backbone
        self.face_locator = model.face_locator
        self.audio_projection = model.audio_projection
        self.speed_encoder = model.speed_encoder
        self.stage = stage
        self.num_tokens = model.config.audio.num_tokens
        self.context_dim = model.config.unet.cross_attention_dim
        schedule = DDPMScheduler.from_config(model.config.scheduler)
        self.prediction_type = schedule.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"training supports epsilon and v_prediction models, this one predicts "
                             f"{self.prediction_type!r}")
        # sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t) per timestep, for q(x_t | x_0).
        alphas = schedule.alphas_cumprod.float()
        self.register_buffer("sqrt_alpha", alphas.sqrt(), persistent=False)
        self.register_buffer("sqrt_one_minus_alpha", (1 - alphas).sqrt(), persistent=False)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """batch (see emo.train.data.TrainingSamples, latents already VAE-encoded):
        target (B, f, 4, h, w), reference (B, 4, h, w), motion (B, n, 4, h, w), face_mask (B, 1, S, S),
        noise (B, 4, f, h, w), timestep (B,), drop_* (B,) bool, audio (B, f, 2m+1, L, D),
        speed (B, n+f). Returns the mean squared error (scalar)."""
        target = batch["target"].permute(0, 2, 1, 3, 4)  # (B, 4, f, h, w)
        b, _, f = target.shape[:3]
        t = batch["timestep"]
        noise = batch["noise"]

        motion = batch["motion"]
        motion = motion * (~batch["drop_motion"]).to(motion.dtype)[:, None, None, None, None]
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.stage.trains("reference_net")):
            reference = self.reference_net(torch.cat([batch["reference"][:, None], motion], dim=1))

        if self.stage.uses_audio:
            # Multiplying (rather than replacing) keeps the projection in the graph of every row,
            # so a batch whose audio is all dropped still gives it a (zero) gradient under DDP.
            keep = (~batch["drop_audio"]).to(target.dtype)[:, None, None, None]
            tokens = self.audio_projection(batch["audio"]) * keep
        else:
            tokens = target.new_zeros(b, f, self.num_tokens, self.context_dim)
        speed = self.speed_encoder(batch["speed"]) if self.stage.uses_speed else None
        face_features = self.face_locator(batch["face_mask"])

        scale = self.sqrt_alpha[t].view(b, 1, 1, 1, 1)
        sigma = self.sqrt_one_minus_alpha[t].view(b, 1, 1, 1, 1)
        noisy = scale * target + sigma * noise
        prediction = self.backbone(noisy, t, tokens, reference=reference,
                                   reference_rows=~batch["drop_reference"], speed=speed,
                                   face_features=face_features)
        goal = noise if self.prediction_type == "epsilon" else scale * noise - sigma * target
        return F.mse_loss(prediction.float(), goal.float())
