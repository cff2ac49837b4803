"""Pre-encoded training latents for the diffusion phase: render and encode once, then sample from memory.

Encoding a batch through the VAE every step would cost about as much as the UNet step itself. The data space is
small (2240 shape x colour x background x position x size combinations, plus jitter), so a pool of 8192 pictures
(three or four jittered copies of each combination; a minute or two to encode) covers it. Pool entry ``i`` is
dataset sample ``i``, so its spec (and hence its captions in any template) is re-derived from ``(seed, i)`` instead
of being stored. The pool is cached in the work folder, keyed by a digest of the VAE encoder, so a resumed run does
not encode again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import Tensor

from modules.sd.vae import AutoencoderKL
from modules.training import shapes_dataset as ds
from modules.training.checkpoints import load_checkpoint, save_checkpoint
from modules.training.progress import TrainingLog

CACHE_NAME = "latents.pt"


def encoder_digest(vae: AutoencoderKL) -> str:
    """A short hash of the encoder-side weights: the pool is stale when they change."""
    digest = hashlib.sha256()
    for name, tensor in sorted({**vae.encoder.state_dict(), **vae.quant_conv.state_dict()}.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@torch.no_grad()
def encode_pool(vae: AutoencoderKL, seed: int, count: int, image_size: int, batch: int = 128) -> Tensor:
    """Scaled latents (posterior means, as the UNet sees them) of dataset samples 0..count-1, in fp16 on the CPU."""
    device = vae.quant_conv.weight.device
    chunks = []
    for start in range(0, count, batch):
        samples = ds.make_batch(seed, start, min(batch, count - start), image_size)
        images = ds.to_tensor_batch([s.image for s in samples])
        chunks.append(vae.encode_to_latent(images.to(device), sample=False).to("cpu", torch.float16))
    return torch.cat(chunks)


def pool_specs(seed: int, count: int) -> list[ds.ShapeSpec]:
    """The specs of pool entries, re-derived from the dataset's per-sample generators."""
    return [ds.random_spec(ds.sample_rng(seed, i)) for i in range(count)]


def load_or_build_pool(vae: AutoencoderKL, work_dir: Path, seed: int, count: int, image_size: int,
                       log: TrainingLog | None = None) -> tuple[Tensor, list[ds.ShapeSpec]]:
    """The pool for this VAE, from the cache when it matches, else encoded now (and cached)."""
    path = work_dir / CACHE_NAME
    key = {"digest": encoder_digest(vae), "seed": seed, "count": count, "image_size": image_size}
    cached = load_checkpoint(path)
    if cached is not None and cached.get("key") == key:
        latents = cached["latents"]
    else:
        if log:
            log(f"latent pool: encoding {count} pictures")
        latents = encode_pool(vae, seed, count, image_size)
        save_checkpoint(path, {"key": key, "latents": latents})
        if log:
            log(f"latent pool: done, latent mean {latents.float().mean():.3f} std {latents.float().std():.3f}")
    return latents, pool_specs(seed, count)
