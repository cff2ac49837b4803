"""TAESD: madebyollin's Tiny AutoEncoder for Stable Diffusion, used for fast live previews.

A ~1M-parameter conv net trained to mimic the SD VAE: its decoder turns a scaled latent (what the UNet sees) into an
RGB image in [0, 1] at full size in a few milliseconds. The modules are plain ``nn.Sequential`` stacks whose indices
are the keys of the original single-file weights (``taesd_decoder.pth``: ``1.weight``, ``3.conv.0.weight``,
``3.skip``...; ``taesdxl_*`` for SDXL's latent space), so ``load_state_dict(strict=True)`` checks the layout. Files in
diffusers' ``AutoencoderTiny`` layout (``decoder.layers.N...``) are renamed on load.

Decoder, per 8x upscale: clamp ``3 tanh(x / 3)``, conv to 64 channels, then three rounds of (3 residual blocks,
nearest 2x upsample, bias-free conv), one more block and a conv to RGB. The encoder mirrors it with stride-2 convs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from modules.errors import BadCheckpoint
from modules.sd.checkpoint import read_state_dict

WIDTH = 64
ENCODER_LAST_CONV = 14
"""Index of the encoder's conv to latent channels: 2 stem layers + 3 x (downsampling conv + 3 blocks)."""


def conv3x3(n_in: int, n_out: int, *, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, stride=stride, bias=bias)


class SoftClamp(nn.Module):
    """``3 tanh(x / 3)``: keeps outlier latents from blowing up the decoder (no weights, index 0)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x / 3) * 3


class TinyBlock(nn.Module):
    """Residual block: ``relu(conv-relu-conv-relu-conv(x) + skip(x))``; keys ``conv.{0,2,4}``, ``skip``."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.conv = nn.Sequential(conv3x3(n_in, n_out), nn.ReLU(), conv3x3(n_out, n_out), nn.ReLU(),
                                  conv3x3(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.fuse(self.conv(x) + self.skip(x))


def tiny_decoder(latent_channels: int = 4) -> nn.Sequential:
    """TAESD decoder: scaled latent ``[B, C, h, w]`` -> RGB ``[B, 3, 8h, 8w]`` in about [0, 1]."""
    layers: list[nn.Module] = [SoftClamp(), conv3x3(latent_channels, WIDTH), nn.ReLU()]
    for _ in range(3):
        layers += [TinyBlock(WIDTH, WIDTH) for _ in range(3)]
        layers += [nn.Upsample(scale_factor=2), conv3x3(WIDTH, WIDTH, bias=False)]
    layers += [TinyBlock(WIDTH, WIDTH), conv3x3(WIDTH, 3)]
    return nn.Sequential(*layers)


def tiny_encoder(latent_channels: int = 4) -> nn.Sequential:
    """TAESD encoder: RGB ``[B, 3, H, W]`` in [0, 1] -> scaled latent ``[B, C, H/8, W/8]``."""
    layers: list[nn.Module] = [conv3x3(3, WIDTH), TinyBlock(WIDTH, WIDTH)]
    for _ in range(3):
        layers += [conv3x3(WIDTH, WIDTH, stride=2, bias=False)]
        layers += [TinyBlock(WIDTH, WIDTH) for _ in range(3)]
    layers += [conv3x3(WIDTH, latent_channels)]
    return nn.Sequential(*layers)


_DIFFUSERS_KEY = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.(.*)$")


def original_layout(state_dict: Mapping[str, Tensor], part: str) -> dict[str, Tensor]:
    """The ``part`` ("decoder"/"encoder") weights in the original numbering.

    Original files pass through unchanged; diffusers' ``AutoencoderTiny`` keys lose their prefix, and decoder
    indices move up by one, because diffusers applies the clamp in ``forward`` instead of as layer 0.
    """
    if not any(_DIFFUSERS_KEY.match(key) for key in state_dict):
        return dict(state_dict)
    shift = 1 if part == "decoder" else 0
    out = {}
    for key, value in state_dict.items():
        match = _DIFFUSERS_KEY.match(key)
        if match and match.group(1) == part:
            out[f"{int(match.group(2)) + shift}.{match.group(3)}"] = value
    return out


def _load(path: str | os.PathLike[str], part: str, build: Callable[[int], nn.Sequential], first_conv: str,
          channel_dim: int) -> nn.Sequential:
    path = Path(path)
    state_dict = original_layout(read_state_dict(path), part)
    if first_conv not in state_dict:
        raise BadCheckpoint(f"{path.name} is not a TAESD {part}: it has no '{first_conv}' tensor.",
                            f"Use taesd_{part}.pth (SD1/SD2) or taesdxl_{part}.pth (SDXL) from madebyollin/taesd.")
    module = build(int(state_dict[first_conv].shape[channel_dim]))
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise BadCheckpoint(f"{path.name} does not match the TAESD {part} layout: {str(e).splitlines()[0]}",
                            "The file may be a different tiny-VAE variant or damaged.") from e
    return module.eval().requires_grad_(False)


def load_tiny_decoder(path: str | os.PathLike[str]) -> nn.Sequential:
    """A TAESD decoder from ``taesd_decoder.pth``/``.safetensors`` (latent channels read from the weights)."""
    return _load(path, "decoder", tiny_decoder, "1.weight", 1)


def load_tiny_encoder(path: str | os.PathLike[str]) -> nn.Sequential:
    """A TAESD encoder from ``taesd_encoder.pth``/``.safetensors`` (latent channels read from the weights)."""
    return _load(path, "encoder", tiny_encoder, f"{ENCODER_LAST_CONV}.weight", 0)
