"""AFNONet, the Adaptive Fourier Neural Operator used as FourCastNet's backbone (Guibas et al., ICLR 2022).

Attribute names follow FourCastNet's ``networks/afnonet.py`` (``patch_embed.proj``, ``pos_embed``,
``blocks.N.{norm1,filter,norm2,mlp}``, ``filter.{w1,b1,w2,b2}``, ``norm``, ``head``) so its checkpoints load with
``strict=True``. Shapes: images go in and out as (B, C, H, W); inside the blocks tokens are (B, h, w, D).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

MODE_BANDS = ("low", "fourcastnet")


def kept_mode_index(height: int, width: int, fraction: float, band: str) -> tuple[torch.Tensor, int] | None:
    """Which rfft2 modes the spectral MLP sees: (row indices along H, count of leading columns along W).

    None means every mode. ``band="low"`` keeps |k_y| < kh and k_x < kw (the low frequencies the fraction is meant to
    keep); ``band="fourcastnet"`` reproduces FourCastNet's slice, rows ``[t-k, t+k)`` around ``t = H//2+1`` (the
    Nyquist row of the unshifted FFT) and columns ``[:k]``, with the same ``k`` (from H) for both axes, so on a
    grid wider than tall FourCastNet drops the upper W modes even at fraction 1 (its 90×180 grid keeps 46 of 91).
    """
    if band not in MODE_BANDS:
        raise ValueError(f"mode_band must be one of {MODE_BANDS}, got {band!r}")
    half_w = width // 2 + 1
    if band == "fourcastnet":
        total = height // 2 + 1
        kept = int(total * fraction)
        start, stop, cols = max(total - kept, 0), min(total + kept, height), min(kept, half_w)
        if start == 0 and stop == height and cols == half_w:
            return None
        return torch.arange(start, stop), cols
    if fraction >= 1.0:
        return None
    kept_h = int((height // 2 + 1) * fraction)
    kept_w = int(half_w * fraction)
    r = torch.arange(height)
    rows = r[torch.minimum(r, height - r) < kept_h]
    return rows, kept_w


class AFNO2D(nn.Module):
    """The AFNO token mixer: rfft2 over (H, W) → block-diagonal complex 2-layer MLP shared by all modes →
    soft-shrink → irfft2, plus the input (a residual inside the mixer). Input and output (B, H, W, C).

    The FFT and the spectral MLP always run in fp32, also under autocast, as in the reference.
    """

    def __init__(self, hidden_size: int, num_blocks: int = 8, sparsity_threshold: float = 0.01,
                 hard_thresholding_fraction: float = 1.0, hidden_size_factor: int = 1, mode_band: str = "low") -> None:
        super().__init__()
        if hidden_size % num_blocks:
            raise ValueError(f"hidden_size {hidden_size} must be divisible by num_blocks {num_blocks}")
        if mode_band not in MODE_BANDS:
            raise ValueError(f"mode_band must be one of {MODE_BANDS}, got {mode_band!r}")
        self.hidden_size = hidden_size
        self.num_blocks = num_blocks
        self.block_size = hidden_size // num_blocks
        self.sparsity_threshold = sparsity_threshold
        self.hard_thresholding_fraction = hard_thresholding_fraction
        self.hidden_size_factor = hidden_size_factor
        self.mode_band = mode_band
        nb, bs, hid = num_blocks, self.block_size, self.block_size * hidden_size_factor
        self.w1 = nn.Parameter(0.02 * torch.randn(2, nb, bs, hid))
        self.b1 = nn.Parameter(0.02 * torch.randn(2, nb, hid))
        self.w2 = nn.Parameter(0.02 * torch.randn(2, nb, hid, bs))
        self.b2 = nn.Parameter(0.02 * torch.randn(2, nb, bs))

    @staticmethod
    def _complex_linear(re: torch.Tensor, im: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(re + i·im) @ (w[0] + i·w[1]) + (b[0] + i·b[1]) per block, as one real matmul on [re, im].

        Returns [real, imag] concatenated on the last axis; ``re``/``im`` are (..., nb, n_in).
        """
        top = torch.cat([w[0], w[1]], dim=-1)  # multiplies re: (nb, n_in, 2·n_out)
        bottom = torch.cat([-w[1], w[0]], dim=-1)  # multiplies im
        weight = torch.cat([top, bottom], dim=-2)  # (nb, 2·n_in, 2·n_out)
        out = torch.einsum("...bi,bio->...bo", torch.cat([re, im], dim=-1), weight)
        return out + torch.cat([b[0], b[1]], dim=-1)

    def spectral_mlp(self, modes: torch.Tensor) -> torch.Tensor:
        """The shared complex MLP on complex modes (..., nb, bs); returns the soft-shrunk complex output."""
        hid = self.block_size * self.hidden_size_factor
        h = F.relu(self._complex_linear(modes.real, modes.imag, self.w1.float(), self.b1.float()))
        o = self._complex_linear(h[..., :hid], h[..., hid:], self.w2.float(), self.b2.float())
        o = F.softshrink(o, lambd=self.sparsity_threshold)
        bs = self.block_size
        return torch.complex(o[..., :bs], o[..., bs:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual, dtype = x, x.dtype
        batch, height, width, channels = x.shape
        plain = torch.autocast(x.device.type, enabled=False) if x.device.type in ("cpu", "cuda") else nullcontext()
        with plain:
            spec = torch.fft.rfft2(x.float(), dim=(1, 2), norm="ortho")
            keep = kept_mode_index(height, width, self.hard_thresholding_fraction, self.mode_band)
            if keep is None:
                selected = spec
            else:
                rows, cols = keep
                selected = spec.index_select(1, rows.to(spec.device))[:, :, :cols]
            shape = selected.shape
            mixed = self.spectral_mlp(selected.reshape(*shape[:3], self.num_blocks, self.block_size)).reshape(shape)
            if keep is not None:
                out = torch.zeros_like(spec)
                out[:, rows.to(spec.device), :cols] = mixed
                mixed = out
            y = torch.fft.irfft2(mixed, s=(height, width), dim=(1, 2), norm="ortho")
        return y.to(dtype) + residual


class Mlp(nn.Module):
    """fc1 → GELU → dropout → fc2 → dropout (the channel MLP of each block)."""

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample with probability ``p`` while training."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Block(nn.Module):
    """norm1 → AFNO filter (→ + x when double_skip) → norm2 → Mlp → + residual. Tokens (B, h, w, D)."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop: float = 0.0, drop_path: float = 0.0,
                 double_skip: bool = True, num_blocks: int = 8, sparsity_threshold: float = 0.01,
                 hard_thresholding_fraction: float = 1.0, mode_band: str = "low") -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.filter = AFNO2D(dim, num_blocks, sparsity_threshold, hard_thresholding_fraction, mode_band=mode_band)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.double_skip = double_skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        x = self.filter(self.norm1(x))
        if self.double_skip:
            x = x + residual
            residual = x
        return self.drop_path(self.mlp(self.norm2(x))) + residual


class PatchEmbed(nn.Module):
    """Non-overlapping p×p patches → D channels by one strided conv; (B, C, H, W) → (B, N, D)."""

    def __init__(self, img_size: tuple[int, int], patch_size: tuple[int, int], in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.img_size, self.patch_size = tuple(img_size), tuple(patch_size)
        self.num_patches = (img_size[0] // patch_size[0]) * (img_size[1] // patch_size[1])
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(f"input is {x.shape[-2]}x{x.shape[-1]}, this model takes "
                             f"{self.img_size[0]}x{self.img_size[1]}")
        return self.proj(x).flatten(2).transpose(1, 2)


@dataclass
class AFNOConfig:
    """Everything that fixes AFNONet's architecture; FourCastNet's published run is ``AFNOConfig.fourcastnet()``."""

    img_size: tuple[int, int] = (64, 64)
    patch_size: tuple[int, int] = (4, 4)
    in_chans: int = 1
    out_chans: int = 1
    embed_dim: int = 128
    depth: int = 4
    mlp_ratio: float = 4.0
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    num_blocks: int = 8
    sparsity_threshold: float = 0.01
    hard_thresholding_fraction: float = 1.0
    double_skip: bool = True
    mode_band: str = "low"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fourcastnet(cls) -> AFNOConfig:
        """FourCastNet's backbone: 720×1440, patch 8, 20 channels in and out, D 768, depth 12, 8 blocks."""
        return cls(img_size=(720, 1440), patch_size=(8, 8), in_chans=20, out_chans=20, embed_dim=768, depth=12,
                   num_blocks=8, mode_band="fourcastnet")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("extra")
        data["img_size"], data["patch_size"] = list(self.img_size), list(self.patch_size)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AFNOConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "extra"}
        for key in ("img_size", "patch_size"):
            if key in known:
                value = known[key]
                known[key] = (int(value), int(value)) if isinstance(value, int) else tuple(int(v) for v in value)
        return cls(**known)


class AFNONet(nn.Module):
    """PatchEmbed → + pos_embed → depth × Block → head → un-patchify; (B, in_chans, H, W) → (B, out_chans, H, W).

    ``norm`` exists only because FourCastNet's checkpoints carry it; like there, forward never applies it.
    """

    def __init__(self, config: AFNOConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        cfg = AFNOConfig.from_dict({**(config.to_dict() if config else {}), **overrides})
        self.config = cfg
        (height, width), (ph, pw) = cfg.img_size, cfg.patch_size
        if height % ph or width % pw:
            raise ValueError(f"img_size {cfg.img_size} is not a multiple of patch_size {cfg.patch_size}")
        self.h, self.w = height // ph, width // pw
        self.embed_dim = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg.img_size, cfg.patch_size, cfg.in_chans, cfg.embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches, cfg.embed_dim))
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        rates = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]  # no tensor: meta-safe
        self.blocks = nn.ModuleList(
            Block(cfg.embed_dim, cfg.mlp_ratio, cfg.drop_rate, rates[i], cfg.double_skip, cfg.num_blocks,
                  cfg.sparsity_threshold, cfg.hard_thresholding_fraction, cfg.mode_band)
            for i in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.head = nn.Linear(cfg.embed_dim, cfg.out_chans * ph * pw, bias=False)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pos_drop(self.patch_embed(x) + self.pos_embed)
        x = x.reshape(x.shape[0], self.h, self.w, self.embed_dim)
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.forward_features(x))  # (B, h, w, p1·p2·C), FourCastNet's (p1 p2 c) order
        (ph, pw), c = self.config.patch_size, self.config.out_chans
        x = x.reshape(x.shape[0], self.h, self.w, ph, pw, c).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(x.shape[0], c, self.h * ph, self.w * pw)
