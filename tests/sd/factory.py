"""Tiny random-weight checkpoints in the original single-file key layout, one per family, for loader tests.

Each family's tiny config keeps the real layout (prefixes, per-level attention, linear vs conv projections, ADM,
9 input channels) with small widths, so a file is a few MB and loads in well under a second. Head counts follow the
detector's rules (SD1: 8 heads; SD2/SDXL: 64-wide heads; text encoders: width / 64 heads).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from modules.sd.text_encoders import CLIPTextConfig, CLIPTextEncoder, OpenCLIPTextConfig, OpenCLIPTextEncoder
from modules.sd.unet import UNetConfig, UNetModel
from modules.sd.vae import AutoencoderKL, VAEConfig

TINY_VAE = VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1)
TINY_VAE_XL = VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, scale_factor=0.13025)
TINY_CLIP = CLIPTextConfig(hidden_size=128, num_layers=2, num_heads=2, intermediate_size=256)
TINY_OPEN_CLIP = OpenCLIPTextConfig(width=128, layers=3, heads=2, projection_dim=128)

TINY_UNETS = {
    "sd1": UNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, transformer_depth=(1, 0),
                      context_dim=128, num_heads=8),
    "sd1_inpaint": UNetConfig(in_channels=9, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                              transformer_depth=(1, 0), context_dim=128, num_heads=8),
    "sd2": UNetConfig(model_channels=64, channel_mult=(1, 2), num_res_blocks=1, transformer_depth=(1, 0),
                      context_dim=128, num_head_channels=64, use_linear_in_transformer=True),
    "sdxl": UNetConfig(model_channels=64, channel_mult=(1, 2), num_res_blocks=1, transformer_depth=(0, 2),
                       transformer_depth_middle=2, context_dim=256, num_head_channels=64,
                       use_linear_in_transformer=True, adm_in_channels=128 + 6 * 256),
}
FAMILY_OF = {"sd1": "sd1", "sd1_inpaint": "sd1", "sd2": "sd2", "sdxl": "sdxl"}


def _prefixed(module: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}


def _randomize(module: torch.nn.Module, generator: torch.Generator) -> torch.nn.Module:
    """Give every tensor random values (zero-initialised output layers would hide wiring mistakes)."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * (0.5 / max(1, p.shape[-1]) ** 0.5 + 0.02))
    return module


def tiny_state_dict(kind: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """The whole single-file state dict of a tiny model of `kind` (sd1, sd1_inpaint, sd2, sdxl)."""
    g = torch.Generator().manual_seed(seed)
    sd = _prefixed(_randomize(UNetModel(TINY_UNETS[kind]), g), "model.diffusion_model.")
    vae_config = TINY_VAE_XL if kind == "sdxl" else TINY_VAE
    sd |= _prefixed(_randomize(AutoencoderKL(vae_config), g), "first_stage_model.")
    family = FAMILY_OF[kind]
    if family == "sd1":
        sd |= _prefixed(_randomize(CLIPTextEncoder(TINY_CLIP), g), "cond_stage_model.")
    elif family == "sd2":
        sd |= _prefixed(_randomize(OpenCLIPTextEncoder(TINY_OPEN_CLIP), g), "cond_stage_model.")
    else:
        sd |= _prefixed(_randomize(CLIPTextEncoder(TINY_CLIP), g), "conditioner.embedders.0.")
        sd |= _prefixed(_randomize(OpenCLIPTextEncoder(TINY_OPEN_CLIP), g), "conditioner.embedders.1.")
    return sd


def write_tiny_checkpoint(kind: str, folder: Path, *, dtype: torch.dtype = torch.float32, seed: int = 0,
                          name: str | None = None) -> Path:
    """Save a tiny checkpoint of `kind` as `<folder>/<name or kind>.safetensors` and return its path."""
    path = folder / f"{name or kind}.safetensors"
    sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tiny_state_dict(kind, seed).items()}
    save_file(sd, str(path))
    return path
