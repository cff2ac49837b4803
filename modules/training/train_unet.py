"""Phase 2: train the UNet and the text encoder jointly on pre-encoded latents (see ``demo_model_config`` for why
v-prediction, extra high-noise timesteps and captions shared by several latents).

One step: draw pool latents and a caption for each (random template; 10 % empty for classifier-free guidance),
draw timesteps (uniform, plus a share from the high-noise end), noise the latents on SD's own linear-beta schedule,
predict v (or epsilon) and take a weighted MSE. An exponential moving average of the weights is what gets exported.
Every draw is seeded by (seed, step), so a resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.sd.attention import SpatialTransformer
from modules.sd.schedule import DiscreteSchedule
from modules.sd.text_encoders import CLIPTextEncoder
from modules.sd.unet import ResBlock, UNetModel
from modules.sd.vae import AutoencoderKL
from modules.training import shapes_dataset as ds
from modules.training.checkpoints import load_checkpoint, save_checkpoint
from modules.training.demo_model_config import DemoModelConfig
from modules.training.latent_pool import load_or_build_pool
from modules.training.progress import BudgetedLoop, TrainingLog, cosine_lr
from modules.training.text_side import TrainableTextEncoder, caption_vocabulary, token_batch

CHECKPOINT_NAME = "unet.pt"


@dataclass(frozen=True)
class UNetSettings:
    batch_size: int = 64
    latents_per_caption: int = 4  # latents (same picture content, other jitter/noise/timestep) per encoded caption
    lr: float = 5e-4
    warmup_steps: int = 200
    weight_decay: float = 0.01
    caption_dropout: float = 0.1
    ema_decay: float = 0.999
    min_snr_gamma: float = 5.0
    high_noise_fraction: float = 0.25  # share of timesteps drawn from [high_noise_start, 1000)
    high_noise_start: int = 700
    pool_size: int = 8192
    seed: int = 0
    checkpoint_every_s: float = 300.0


class DemoDiffusion(nn.Module):
    """The trainable pair: UNet and text encoder (with its compact vocabulary table)."""

    def __init__(self, config: DemoModelConfig, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.unet = zero_init_outputs(UNetModel(config.unet))
        self.text = TrainableTextEncoder(anchor_final_norm(CLIPTextEncoder(config.text)), caption_vocabulary())

    def forward(self, latents: Tensor, timesteps: Tensor, tokens: Tensor) -> Tensor:
        """Predictions for ``latents``; each row of ``tokens`` conditions ``len(latents) // len(tokens)`` of them."""
        context = self.text(tokens).repeat_interleave(len(latents) // len(tokens), dim=0)
        return self.unet(latents, timesteps, context)


def zero_init_outputs(unet: UNetModel) -> UNetModel:
    """Zero the last layer of every residual branch and of the output, as the original openaimodel does: each block
    starts as the identity, which makes training from scratch stable."""
    with torch.no_grad():
        for module in unet.modules():
            if isinstance(module, ResBlock):
                nn.init.zeros_(module.out_layers[-1].weight)
                nn.init.zeros_(module.out_layers[-1].bias)
            elif isinstance(module, SpatialTransformer):
                nn.init.zeros_(module.proj_out.weight)
                nn.init.zeros_(module.proj_out.bias)
        nn.init.zeros_(unet.out[-1].weight)
        nn.init.zeros_(unet.out[-1].bias)
    return unet


FINAL_NORM_BIAS = 1.0


def anchor_final_norm(encoder: CLIPTextEncoder) -> CLIPTextEncoder:
    """Fix the final LayerNorm's bias at 1.0 so the text features have a mean far from zero, as real CLIP's do.

    The pipeline's "Original" emphasis rescales each chunk by (mean before weighting) / (mean after): with a mean
    near zero that ratio is unstable, and exactly zero (an untrained LayerNorm) gives NaN. The bias costs the UNet
    nothing: SD's to_k / to_v have no bias, so a bias shared by all tokens shifts every key equally (softmax ignores
    it) and every value equally (to_out's bias absorbs it); it is therefore not trained.
    """
    bias = encoder.transformer.text_model.final_layer_norm.bias
    with torch.no_grad():
        bias.fill_(FINAL_NORM_BIAS)
    bias.requires_grad_(False)
    return encoder


class EMA:
    """Exponential moving average of parameters, with the usual warm-up (decay grows as (1 + n) / (10 + n))."""

    def __init__(self, params: Sequence[nn.Parameter], decay: float) -> None:
        self.params = list(params)
        self.decay = decay
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        weight = 1.0 - min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], weight)  # one kernel, not one per tensor

    @torch.no_grad()
    def copy_to_params(self) -> None:
        for shadow, param in zip(self.shadow, self.params, strict=True):
            param.copy_(shadow)


FROZEN = ("text.encoder.transformer.text_model.embeddings.token_embedding.weight",
          "text.encoder.transformer.text_model.final_layer_norm.bias")


def trainable_named_parameters(model: DemoDiffusion) -> list[tuple[str, nn.Parameter]]:
    """Everything but the full vocabulary table (its used rows train as ``text.rows``) and the anchored final-norm
    bias, in a fixed order; the EMA shadow list in a checkpoint follows this order."""
    return [(name, p) for name, p in model.named_parameters() if name not in FROZEN]


def trainable_parameters(model: DemoDiffusion) -> list[nn.Parameter]:
    return [p for _, p in trainable_named_parameters(model)]


def make_optimizer(model: DemoDiffusion, settings: UNetSettings) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases, norms and embedding rows."""
    decay, no_decay = [], []
    for name, param in trainable_named_parameters(model):
        (no_decay if param.ndim < 2 or "embedding" in name or name.endswith("rows") else decay).append(param)
    return torch.optim.AdamW([{"params": decay, "weight_decay": settings.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=settings.lr, betas=(0.9, 0.99))


def sample_timesteps(generator: torch.Generator, count: int, settings: UNetSettings, total: int = 1000) -> Tensor:
    """Uniform timesteps, with a ``high_noise_fraction`` share drawn from the high-noise end instead."""
    uniform = torch.randint(0, total, (count,), generator=generator)
    high = torch.randint(settings.high_noise_start, total, (count,), generator=generator)
    pick_high = torch.rand(count, generator=generator) < settings.high_noise_fraction
    return torch.where(pick_high, high, uniform)


def loss_weights(alphas_cumprod: Tensor, prediction_type: str, gamma: float) -> Tensor:
    """Per-sample MSE weights. v: (min(SNR, gamma) + 1) / (SNR + 1), i.e. x0-error weight min(SNR, gamma) + 1;
    epsilon: min-SNR, min(SNR, gamma) / SNR."""
    snr = alphas_cumprod / (1 - alphas_cumprod)
    clamped = snr.clamp(max=gamma)
    if prediction_type == "v_prediction":
        return (clamped + 1) / (snr + 1)
    return clamped / snr


def diffusion_loss(model: DemoDiffusion, latents: Tensor, tokens: Tensor, timesteps: Tensor, noise: Tensor,
                   schedule: DiscreteSchedule, prediction_type: str, gamma: float) -> Tensor:
    """Weighted MSE between the model's prediction on noised latents and the v / epsilon target."""
    alphas = schedule.alphas_cumprod.to(latents.device, torch.float32)[timesteps]
    a = alphas.sqrt()[:, None, None, None]
    s = (1 - alphas).sqrt()[:, None, None, None]
    noisy = a * latents + s * noise
    target = a * noise - s * latents if prediction_type == "v_prediction" else noise
    prediction = model(noisy, timesteps.to(torch.float32), tokens)
    per_sample = F.mse_loss(prediction, target, reduction="none").mean(dim=(1, 2, 3))
    return (per_sample * loss_weights(alphas, prediction_type, gamma)).mean()


def combination_index(specs: Sequence[ds.ShapeSpec]) -> dict[tuple, list[int]]:
    """Pool indices by what a caption can say about them (everything but the jitter)."""
    groups: dict[tuple, list[int]] = {}
    for i, spec in enumerate(specs):
        groups.setdefault((spec.shape, spec.colour, spec.background, spec.position, spec.size), []).append(i)
    return groups


def training_batch(pool: Tensor, specs: Sequence[ds.ShapeSpec], combinations: dict[tuple, list[int]],
                   settings: UNetSettings, step: int) -> tuple[Tensor, Tensor, torch.Generator]:
    """Latents, caption tokens (one row per ``latents_per_caption`` latents) and the step's torch generator, all
    determined by (seed, step). The latents sharing a caption are pool entries showing the same combination."""
    rng = np.random.default_rng([settings.seed, 7, step])
    share = settings.latents_per_caption
    index: list[int] = []
    texts = []
    for _ in range(settings.batch_size // share):
        first = int(rng.integers(len(pool)))
        spec = specs[first]
        siblings = combinations[(spec.shape, spec.colour, spec.background, spec.position, spec.size)]
        index += [first, *(int(j) for j in rng.choice(siblings, size=share - 1))]
        drop = rng.random() < settings.caption_dropout
        template = ds.random_template(rng)
        texts.append("" if drop else ds.caption(spec, template))
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    return pool[torch.tensor(index, device=pool.device)].float(), token_batch(texts), generator


def train_unet(config: DemoModelConfig, vae: AutoencoderKL, work_dir: Path, budget_s: float, *,
               settings: UNetSettings = UNetSettings(), max_steps: int | None = None, resume: bool = True,
               log: TrainingLog | None = None, show_bar: bool = True,
               device: torch.device | str = "cpu") -> tuple[DemoDiffusion, dict[str, Any]]:
    """Train (or resume, or load when complete) the UNet + text encoder; returns the EMA weights in eval mode, on
    ``device``. The batches' random draws stay on the CPU, so the data seen does not depend on the device."""
    path = work_dir / CHECKPOINT_NAME
    state = load_checkpoint(path) if resume else None
    model = DemoDiffusion(config, settings.seed)
    if state is not None:
        model.load_state_dict(state["model"])
    model.to(device)
    params = trainable_parameters(model)
    optimizer = make_optimizer(model, settings)
    ema = EMA(params, settings.ema_decay)
    step, elapsed = 0, 0.0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        ema.shadow = [t.to(device, copy=True) for t in state["ema"]]
        step, elapsed = int(state["step"]), float(state["elapsed"])
        if state.get("complete"):
            ema.copy_to_params()
            return model.eval().requires_grad_(False), dict(state["info"])
        if log:
            log(f"unet: resuming at step {step} after {elapsed / 60:.1f} min")
    elif log:
        unet_m = sum(p.numel() for p in model.unet.parameters()) / 1e6
        text_m = sum(p.numel() for p in model.text.encoder.parameters()) / 1e6
        log(f"unet: training from scratch, UNet {unet_m:.2f} M + text encoder {text_m:.2f} M parameters "
            f"({len(model.text.token_ids)} trained vocabulary rows), settings {asdict(settings)}")

    if settings.batch_size % settings.latents_per_caption:
        raise ValueError("batch_size must be a multiple of latents_per_caption")
    pool, specs = load_or_build_pool(vae, work_dir, settings.seed, settings.pool_size, config.image_size, log)
    pool = pool.to(device)
    combinations = combination_index(specs)
    schedule = DiscreteSchedule.ldm_linear(config.prediction_type)
    loop = BudgetedLoop("unet", budget_s, start_step=step, elapsed=elapsed, max_steps=max_steps, log=log,
                        checkpoint_every_s=settings.checkpoint_every_s, show_bar=show_bar)

    def snapshot(complete: bool, info: dict[str, Any] | None = None) -> None:
        save_checkpoint(path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                               "ema": ema.shadow, "step": loop.step, "elapsed": loop.elapsed,
                               "complete": complete, "info": info or {}})

    model.train()
    smoothed = None
    try:
        for step in loop:
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(settings.lr, loop.fraction, step, settings.warmup_steps)
            latents, tokens, generator = training_batch(pool, specs, combinations, settings, step)
            timesteps = sample_timesteps(generator, len(latents), settings).to(device)
            noise = torch.randn(latents.shape, generator=generator).to(device)
            tokens = tokens.to(device)
            loss = diffusion_loss(model, latents, tokens, timesteps, noise, schedule, config.prediction_type,
                                  settings.min_snr_gamma)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            ema.update(step)
            smoothed = loss.item() if smoothed is None else 0.98 * smoothed + 0.02 * loss.item()
            loop.report(loss=smoothed, grad=float(grad_norm), lr=optimizer.param_groups[0]["lr"])
            if loop.checkpoint_due():
                snapshot(False)
    except KeyboardInterrupt:
        snapshot(False)
        if log:
            log(f"unet: interrupted at step {loop.step}; checkpoint saved, continue with --resume")
        raise
    info = {"steps": loop.step, "minutes": loop.elapsed / 60, "final_loss": smoothed,
            "images_seen": loop.step * settings.batch_size, "steps_per_second": loop.steps_per_second()}
    snapshot(True, info)
    if log:
        log(f"unet: done after {loop.step} steps ({loop.elapsed / 60:.1f} min), smoothed loss {smoothed}")
    ema.copy_to_params()
    return model.eval().requires_grad_(False), info
