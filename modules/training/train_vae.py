"""Phase 1: train the demo model's KL autoencoder from scratch on shape pictures, then whiten its latents.

Loss per picture: L1 + MSE on pixels, plus L1 on horizontal/vertical pixel differences (keeps shape edges sharp:
without it the calibration VAE drew blobs), plus a small KL term on the posterior. Batches are drawn from the
procedural dataset by step number, so a resumed run sees exactly the pictures an uninterrupted one would.

After training, ``whiten_latents`` folds a per-channel affine map into ``quant_conv`` and ``post_quant_conv`` so that
``latent * 0.18215`` (the scale the SD1 pipeline applies) has zero mean and unit variance per channel. Decoding is
unchanged; the diffusion model then trains on well-scaled latents and the checkpoint needs no custom scale factor.
"""

from __future__ import annotations

import collections
import functools
import itertools
import math
import multiprocessing
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from modules.sd.vae import AutoencoderKL
from modules.training import shapes_dataset as ds
from modules.training.checkpoints import load_checkpoint, save_checkpoint
from modules.training.demo_model_config import DemoModelConfig
from modules.training.progress import BudgetedLoop, TrainingLog, cosine_lr

CHECKPOINT_NAME = "vae.pt"
VALIDATION_SEED_OFFSET = 10_000  # validation pictures come from another dataset seed than training ones


@dataclass(frozen=True)
class VAESettings:
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 100
    kl_weight: float = 1e-5  # per latent element, against per-pixel reconstruction losses
    gradient_weight: float = 0.5
    seed: int = 0
    checkpoint_every_s: float = 300.0
    whiten_count: int = 512  # pictures measured for the latent whitening
    quality_count: int = 64  # pictures reconstructed for the final PSNR / judge scores


def gradient_l1(a: Tensor, b: Tensor) -> Tensor:
    """Mean L1 distance between the horizontal and vertical pixel differences of two image batches."""
    dx = (a[..., :, 1:] - a[..., :, :-1]) - (b[..., :, 1:] - b[..., :, :-1])
    dy = (a[..., 1:, :] - a[..., :-1, :]) - (b[..., 1:, :] - b[..., :-1, :])
    return dx.abs().mean() + dy.abs().mean()


def vae_loss(vae: AutoencoderKL, images: Tensor, settings: VAESettings,
             generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
    """The training loss of one batch of pictures in [-1, 1], and its parts for logging."""
    posterior = vae.encode(images)
    recon = vae.decode(posterior.sample(generator))
    l1 = (recon - images).abs().mean()
    mse = F.mse_loss(recon, images)
    edges = gradient_l1(recon, images)
    kl = 0.5 * (posterior.mean**2 + posterior.std**2 - 1.0 - posterior.logvar).mean()
    loss = l1 + mse + settings.gradient_weight * edges + settings.kl_weight * kl
    return loss, {"loss": loss.item(), "l1": l1.item(), "mse": mse.item(), "kl": kl.item()}


def training_images(settings: VAESettings, step: int, size: int) -> Tensor:
    samples = ds.make_batch(settings.seed, step * settings.batch_size, settings.batch_size, size)
    return ds.to_tensor_batch([s.image for s in samples])


def step_generator(seed: int, step: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator that depends only on (seed, step): resumed runs draw the same noise (on one device type)."""
    return torch.Generator(device=device).manual_seed((seed * 1_000_003 + step) % (2**63))


def new_vae(config: DemoModelConfig, seed: int) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(config.vae)


def train_vae(config: DemoModelConfig, work_dir: Path, budget_s: float, *, settings: VAESettings = VAESettings(),
              max_steps: int | None = None, resume: bool = True, log: TrainingLog | None = None,
              show_bar: bool = True, device: torch.device | str = "cpu",
              data_workers: int = 0) -> tuple[AutoencoderKL, dict[str, Any]]:
    """Train (or resume, or just load when already complete) the VAE; returns it in eval mode on ``device`` and its
    run info. ``data_workers`` processes render the pictures ahead (worth it on a GPU, where drawing them in the
    training process would leave the card waiting)."""
    path = work_dir / CHECKPOINT_NAME
    state = load_checkpoint(path) if resume else None
    vae = new_vae(config, settings.seed)
    if state is not None:
        vae.load_state_dict(state["model"])
    vae.to(device)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=settings.lr, betas=(0.9, 0.99), weight_decay=0.0)
    step, elapsed = 0, 0.0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
        if state.get("complete"):
            return vae.eval().requires_grad_(False), dict(state["info"])
        if log:
            log(f"vae: resuming at step {step} after {elapsed / 60:.1f} min")
    elif log:
        params = sum(p.numel() for p in vae.parameters())
        log(f"vae: training from scratch, {params / 1e6:.2f} M parameters, settings {asdict(settings)}")

    loop = BudgetedLoop("vae", budget_s, start_step=step, elapsed=elapsed, max_steps=max_steps, log=log,
                        checkpoint_every_s=settings.checkpoint_every_s, show_bar=show_bar)

    def snapshot(complete: bool, info: dict[str, Any] | None = None) -> None:
        save_checkpoint(path, {"model": vae.state_dict(), "optimizer": optimizer.state_dict(), "step": loop.step,
                               "elapsed": loop.elapsed, "complete": complete, "info": info or {}})

    vae.train()
    parts: dict[str, float] = {}
    batches = prefetched_images(settings, step, config.image_size, data_workers)
    try:
        for step in loop:
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(settings.lr, loop.fraction, step, settings.warmup_steps)
            images = next(batches).to(device, non_blocking=True)
            loss, parts = vae_loss(vae, images, settings, step_generator(settings.seed, step, device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            optimizer.step()
            loop.report(**parts)
            if loop.checkpoint_due():
                snapshot(False)
    except KeyboardInterrupt:
        snapshot(False)
        if log:
            log(f"vae: interrupted at step {loop.step}; checkpoint saved, continue with --resume")
        raise
    finally:
        batches.close()

    vae.eval().requires_grad_(False)
    info: dict[str, Any] = {"steps": loop.step, "minutes": loop.elapsed / 60, "final": parts}
    info["whitening"] = whiten_latents(vae, config, settings.seed + VALIDATION_SEED_OFFSET, settings.whiten_count)
    info["quality"] = vae_quality(vae, config, settings.seed + VALIDATION_SEED_OFFSET + 1, settings.quality_count)
    snapshot(True, info)
    if log:
        log(f"vae: done after {loop.step} steps ({loop.elapsed / 60:.1f} min): {info['quality']}")
    return vae, info


def prefetched_images(settings: VAESettings, start_step: int, size: int, workers: int) -> Iterator[Tensor]:
    """The training batches of steps ``start_step, start_step + 1, ...`` in order; rendered by ``workers`` processes
    ahead of use when ``workers > 0`` (the same pictures either way: each batch is a function of its step)."""
    if workers <= 0:
        for step in itertools.count(start_step):
            yield training_images(settings, step, size)
        return
    context = multiprocessing.get_context("spawn")  # no fork of a process that may hold a CUDA context
    render = functools.partial(_render_step, settings.seed, settings.batch_size, size)
    with context.Pool(workers) as pool:  # leaving the block (generator closed) terminates the workers
        steps = itertools.count(start_step)
        pending = collections.deque(pool.apply_async(render, (next(steps),)) for _ in range(4 * workers))
        while True:  # a bounded window: Pool.imap would queue an endless step sequence all at once
            pictures = pending.popleft().get()
            pending.append(pool.apply_async(render, (next(steps),)))
            yield ds.to_tensor_batch(list(pictures))


def _render_step(seed: int, batch_size: int, size: int, step: int) -> np.ndarray:
    return np.stack([s.image for s in ds.make_batch(seed, step * batch_size, batch_size, size)])


@torch.no_grad()
def latent_statistics(vae: AutoencoderKL, images: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and standard deviation of the posterior means of ``images``."""
    means = torch.cat([vae.encode(chunk).mean for chunk in images.split(64)])
    return means.mean(dim=(0, 2, 3)), means.std(dim=(0, 2, 3))


@torch.no_grad()
def whiten_latents(vae: AutoencoderKL, config: DemoModelConfig, seed: int, count: int = 512) -> dict[str, list]:
    """Fold a per-channel affine map into the quant convs so ``latent * scale_factor`` is ~N(0, 1) per channel.

    For channel k with posterior-mean statistics (m_k, s_k): new mean = c_k (mean - m_k) with c_k = 1 / (s_k * scale),
    new log-variance = logvar + 2 ln c_k, and ``post_quant_conv`` undoes the map, so decoding is unchanged.
    """
    images = ds.to_tensor_batch([s.image for s in ds.make_batch(seed, 0, count, config.image_size)])
    mean, std = latent_statistics(vae, images.to(vae.quant_conv.weight.device))
    c = 1.0 / (std.clamp_min(1e-6) * vae.config.scale_factor)
    k = vae.config.embed_dim
    quant, post = vae.quant_conv, vae.post_quant_conv
    quant.weight[:k] *= c[:, None, None, None]
    quant.bias[:k] = c * (quant.bias[:k] - mean)
    quant.bias[k:] += 2 * torch.log(c)
    post.bias += post.weight[:, :, 0, 0] @ mean
    post.weight /= c[None, :, None, None]
    return {"channel_mean": mean.tolist(), "channel_std": std.tolist()}


@torch.no_grad()
def vae_quality(vae: AutoencoderKL, config: DemoModelConfig, seed: int, count: int = 64) -> dict[str, float]:
    """PSNR of reconstructions and the judge's scores on them (colour and shape must survive the autoencoder)."""
    from modules.training.evaluate import score_images

    samples = ds.make_batch(seed, 0, count, config.image_size)
    images = ds.to_tensor_batch([s.image for s in samples]).to(vae.quant_conv.weight.device)
    recon = torch.cat([vae(chunk) for chunk in images.split(64)]).clamp(-1, 1)
    mse = F.mse_loss((recon + 1) / 2, (images + 1) / 2).item()
    pictures = [np.asarray(((r.permute(1, 2, 0) + 1) * 127.5).round().to(torch.uint8).cpu()) for r in recon]
    scores = score_images(pictures, [s.spec for s in samples])
    latents = vae.encode_to_latent(images, sample=False)
    return {"psnr": 10 * math.log10(1 / max(mse, 1e-10)), "colour": scores["colour"], "shape": scores["shape"],
            "position": scores["position"], "latent_std": latents.std().item(), "latent_mean": latents.mean().item()}
