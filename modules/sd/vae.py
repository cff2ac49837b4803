"""The KL autoencoder (VAE) of Stable Diffusion, in the original LDM layout.

Attribute names follow the single-file checkpoints' `first_stage_model.*` keys (prefix stripped), so
`load_state_dict(strict=True)` on a checkpoint's VAE weights is the test that the architecture is right.
Images are [-1, 1] RGB tensors (B, 3, H, W); latents are (B, z, H/f, W/f) with f = 2 ** (len(ch_mult) - 1).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

ATTENTION_WEIGHT_KEYS = ("q", "k", "v", "proj_out")


@dataclass(frozen=True)
class VAEConfig:
    """Sizes of an AutoencoderKL; the defaults are the SD1/SD2/SDXL VAE."""

    in_channels: int = 3
    out_channels: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 4
    embed_dim: int = 4
    scale_factor: float = 0.18215  # SDXL 0.13025

    @property
    def downscale(self) -> int:
        """Pixels per latent pixel along each axis."""
        return 2 ** (len(self.ch_mult) - 1)


def group_norm(channels: int) -> nn.GroupNorm:
    """The LDM `Normalize`: 32 groups, eps 1e-6."""
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """Two norm-swish-conv stages plus a skip (1x1 `nin_shortcut` when the width changes)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        skip = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return skip + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels, with 1x1-conv projections as in the LDM checkpoints."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        h = self.norm(x)

        def as_tokens(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, 1, c, height * width).transpose(2, 3)

        q, k, v = as_tokens(self.q(h)), as_tokens(self.k(h)), as_tokens(self.v(h))
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(2, 3).reshape(b, c, height, width)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Stride-2 3x3 conv after padding right/bottom by one, exactly as the original (asymmetric) layer."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample(nn.Module):
    """Nearest-neighbour x2 followed by a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MidBlock(nn.Module):
    """ResNet - attention - ResNet at the lowest resolution (`mid.block_1`, `mid.attn_1`, `mid.block_2`)."""

    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    """Image (B, in_channels, H, W) -> moments (B, 2*z_channels, H/f, W/f)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        ch, mult = config.ch, config.ch_mult
        self.conv_in = nn.Conv2d(config.in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        block_in = ch
        for level, m in enumerate(mult):
            stage = nn.Module()
            block_out = ch * m
            stage.block = nn.ModuleList()
            for _ in range(config.num_res_blocks):
                stage.block.append(ResnetBlock(block_in, block_out))
                block_in = block_out
            if level != len(mult) - 1:
                stage.downsample = Downsample(block_in)
            self.down.append(stage)
        self.mid = MidBlock(block_in)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, 2 * config.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            for block in stage.block:
                h = block(h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent (B, z_channels, h, w) -> image (B, out_channels, h*f, w*f).

    `up` is indexed like the original: `up.0` is the full-resolution stage, run last.
    """

    def __init__(self, config: VAEConfig):
        super().__init__()
        ch, mult = config.ch, config.ch_mult
        block_in = ch * mult[-1]
        self.conv_in = nn.Conv2d(config.z_channels, block_in, 3, padding=1)
        self.mid = MidBlock(block_in)
        stages: list[nn.Module] = []
        for level in reversed(range(len(mult))):
            stage = nn.Module()
            block_out = ch * mult[level]
            stage.block = nn.ModuleList()
            for _ in range(config.num_res_blocks + 1):
                stage.block.append(ResnetBlock(block_in, block_out))
                block_in = block_out
            if level != 0:
                stage.upsample = Upsample(block_in)
            stages.insert(0, stage)
        self.up = nn.ModuleList(stages)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, config.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for stage in reversed(self.up):
            for block in stage.block:
                h = block(h)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class DiagonalGaussian:
    """The encoder's posterior N(mean, exp(logvar)); logvar is clamped to [-30, 20] as in LDM."""

    def __init__(self, moments: torch.Tensor):
        self.mean, logvar = torch.chunk(moments, 2, dim=1)
        self.logvar = torch.clamp(logvar, -30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """mean + std * N(0, 1), the noise drawn in fp32 on the generator's device (reproducible across dtypes)."""
        device = generator.device if generator is not None else self.mean.device
        noise = torch.randn(self.mean.shape, generator=generator, device=device, dtype=torch.float32)
        return self.mean + self.std * noise.to(self.mean.device, self.mean.dtype)

    def mode(self) -> torch.Tensor:
        return self.mean


class AutoencoderKL(nn.Module):
    """SD's VAE: `encoder`, `quant_conv`, `post_quant_conv`, `decoder`, named as in the checkpoints."""

    def __init__(self, config: VAEConfig | None = None):
        super().__init__()
        self.config = config or VAEConfig()
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)
        self.quant_conv = nn.Conv2d(2 * self.config.z_channels, 2 * self.config.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(self.config.embed_dim, self.config.z_channels, 1)

    @property
    def dtype(self) -> torch.dtype:
        return self.quant_conv.weight.dtype

    def encode_moments(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> concatenated (mean, logvar), the tensor tiling blends."""
        return self.quant_conv(self.encoder(x.to(self.dtype)))

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        return DiagonalGaussian(self.encode_moments(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z.to(self.dtype)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x).mode())

    def encode_to_latent(
        self,
        images: torch.Tensor,
        sample: bool = True,
        generator: torch.Generator | None = None,
        tile_size: int | None = None,
        overlap: int = 64,
    ) -> torch.Tensor:
        """Images in [-1, 1] -> scaled latents, what the UNet sees.

        `tile_size`/`overlap` are in image pixels; None encodes in one pass.
        """
        if tile_size is None:
            posterior = self.encode(images)
        else:
            posterior = DiagonalGaussian(self.tiled_encode_moments(images, tile_size, overlap))
        latent = posterior.sample(generator) if sample else posterior.mode()
        return latent * self.config.scale_factor

    def decode_latent(
        self, latent: torch.Tensor, tile_size: int | None = None, overlap: int = 64, nan_fallback: bool = True
    ) -> torch.Tensor:
        """Scaled latents -> images in about [-1, 1] (not clamped).

        `tile_size`/`overlap` are in image pixels. In fp16/bf16, a result with NaN/inf (overflow, typical of the
        SDXL VAE in fp16) is recomputed in fp32 and returned in fp32, like A1111's auto VAE precision.
        """
        z = latent / self.config.scale_factor

        def run() -> torch.Tensor:
            if tile_size is None:
                return self.decode(z)
            return self.tiled_decode(z, tile_size, overlap)

        image = run()
        if nan_fallback and self.dtype in (torch.float16, torch.bfloat16) and not torch.isfinite(image).all():
            with upcast_to_float32(self):
                image = run()
        return image

    def tiled_encode_moments(self, images: torch.Tensor, tile_size: int = 512, overlap: int = 64) -> torch.Tensor:
        """Encode overlapping image tiles and blend their moments; memory grows with the tile, not the image."""
        f = self.config.downscale
        return run_tiled(self.encode_moments, images, tile_size, overlap, align=f, scale=1 / f)

    def tiled_decode(self, z: torch.Tensor, tile_size: int = 512, overlap: int = 64) -> torch.Tensor:
        """Decode overlapping latent tiles and blend the images; sizes are in image pixels."""
        f = self.config.downscale
        latent_tile = max(1, tile_size // f)
        latent_overlap = min(overlap // f, latent_tile - 1)
        return run_tiled(self.decode, z, latent_tile, latent_overlap, align=1, scale=f)


@contextlib.contextmanager
def upcast_to_float32(module: nn.Module) -> Iterator[nn.Module]:
    """Run a module in fp32 for a while, then restore its dtype (converted in place: no second copy is kept)."""
    dtype = next(module.parameters()).dtype
    try:
        yield module.float()
    finally:
        module.to(dtype)


def fix_vae_state_dict(state_dict: Mapping[str, torch.Tensor], prefix: str = "first_stage_model.") -> dict:
    """Normalise VAE weights for `AutoencoderKL.load_state_dict`.

    Strips `prefix` when present, drops training leftovers (`loss.*`, `model_ema.*`), and reshapes attention
    q/k/v/proj_out weights saved as Linear [C, C] (files converted from diffusers) to conv [C, C, 1, 1].
    """
    fixed: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(prefix):
            key = key[len(prefix) :]
        if key.startswith(("loss.", "model_ema.")):
            continue
        if is_attention_weight(key) and value.ndim == 2:
            value = value.reshape(*value.shape, 1, 1)
        fixed[key] = value
    return fixed


def is_attention_weight(key: str) -> bool:
    parts = key.split(".")
    return (
        len(parts) >= 3
        and parts[-3].startswith("attn")
        and parts[-2] in ATTENTION_WEIGHT_KEYS
        and parts[-1] == "weight"
    )


def tile_starts(length: int, tile: int, overlap: int, align: int) -> list[int]:
    """Evenly spread tile offsets covering [0, length) with at least `overlap` shared between neighbours.

    Offsets are multiples of `align` (so image tiles map to whole latent pixels); the last tile ends at `length`.
    """
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    last = length - tile
    starts = [round(i * last / (count - 1) / align) * align for i in range(count)]
    starts[-1] = last
    return sorted(set(starts))


def edge_ramp(size: int, ramp: int, at_start: bool, at_end: bool, device: torch.device) -> torch.Tensor:
    """1-D blend weight: rises linearly over `ramp` samples on each side that borders another tile."""
    weight = torch.ones(size, device=device)
    ramp = min(ramp, size // 2)
    if ramp > 0:
        rise = torch.arange(1, ramp + 1, device=device, dtype=torch.float32) / (ramp + 1)
        if not at_start:
            weight[:ramp] = rise
        if not at_end:
            weight[size - ramp :] = rise.flip(0)
    return weight


def run_tiled(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, overlap: int, align: int, scale: float
) -> torch.Tensor:
    """Apply a resolution-changing `fn` to overlapping tiles of x (B, C, H, W) and blend the outputs.

    `scale` is output pixels per input pixel. Each output tile is weighted by linear ramps across the overlaps and
    the sum is normalised, so neighbouring tiles cross-fade instead of meeting at a visible seam.
    """
    height, width = x.shape[-2:]
    tile_h, tile_w = min(tile, height), min(tile, width)
    overlap = max(0, min(overlap, tile - align))
    rows = tile_starts(height, tile_h, overlap, align)
    cols = tile_starts(width, tile_w, overlap, align)
    if len(rows) == 1 and len(cols) == 1:
        return fn(x)
    ramp = round(overlap * scale)
    out: torch.Tensor | None = None
    total = None
    out_dtype = x.dtype
    for top in rows:
        for left in cols:
            piece = fn(x[..., top : top + tile_h, left : left + tile_w])
            out_dtype, piece = piece.dtype, piece.float()
            out_h, out_w = piece.shape[-2:]
            if out is None:
                out = torch.zeros(*piece.shape[:2], round(height * scale), round(width * scale), device=piece.device)
                total = torch.zeros(out.shape[-2:], device=piece.device)
            weight_h = edge_ramp(out_h, ramp, top == rows[0], top == rows[-1], piece.device)
            weight_w = edge_ramp(out_w, ramp, left == cols[0], left == cols[-1], piece.device)
            weight = weight_h[:, None] * weight_w[None, :]
            y, x0 = round(top * scale), round(left * scale)
            out[..., y : y + out_h, x0 : x0 + out_w] += piece * weight
            total[y : y + out_h, x0 : x0 + out_w] += weight
    return (out / total).to(out_dtype)
