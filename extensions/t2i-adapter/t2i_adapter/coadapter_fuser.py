"""The CoAdapter fuser (``coadapter-fuser-sd15v1.pth``): lets several adapters' outputs re-weight each other.

Each spatial condition's feature maps are mean-pooled to one token per level (``spatial_feat_mapping``: SiLU then
Linear), tagged with a per-condition ``task_embedding`` row and a ``positional_embedding`` per level; a style
condition contributes its token sequence plus its task row. A small transformer mixes all tokens; each spatial map
is then scaled per channel by ``1 + spatial_ch_projs[level](token)`` and the maps of all conditions are summed,
while style tokens are scaled by ``1 + token @ seq_proj`` and concatenated. Both projections start at zero, so an
untrained fuser is a plain sum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .attention_block import LayerNormFP32, ResidualAttentionBlock

# The original's ExtraCondition numbering, which indexes task_embedding.
TASK_INDEX: dict[str, int] = {
    "sketch": 0, "keypose": 1, "seg": 2, "depth": 3, "canny": 4, "style": 5, "color": 6, "openpose": 7,
}
TASK_ALIASES: dict[str, str] = {"zoedepth": "depth", "lineart": "sketch", "edge": "sketch", "mask": "seg"}


def task_index(condition: str | None) -> int:
    """task_embedding row of a condition name; unknown names are a ValueError naming the known ones."""
    name = TASK_ALIASES.get(condition or "", condition or "")
    if name not in TASK_INDEX:
        raise ValueError(f"The CoAdapter fuser does not know the condition {condition!r}; "
                         f"it was trained on {', '.join(TASK_INDEX)}.")
    return TASK_INDEX[name]


@dataclass(frozen=True)
class FuserConfig:
    unet_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    width: int = 768
    num_head: int = 8
    layers: int = 3
    tasks: int = 16


FuserInput = tuple[int, list[Tensor] | Tensor]


class CoAdapterFuser(nn.Module):
    """[(task index, feature maps or style tokens), ...] -> (summed fused maps or None, fused style tokens or None)."""

    def __init__(self, config: FuserConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or FuserConfig()
        scale = config.width**-0.5
        self.task_embedding = nn.Parameter(scale * torch.randn(config.tasks, config.width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(len(config.unet_channels), config.width))
        self.spatial_feat_mapping = nn.ModuleList(
            nn.Sequential(nn.SiLU(), nn.Linear(ch, config.width)) for ch in config.unet_channels
        )
        self.transformer_layes = nn.Sequential(
            *[ResidualAttentionBlock(config.width, config.num_head) for _ in range(config.layers)]
        )
        self.ln_post = LayerNormFP32(config.width)
        self.ln_pre = LayerNormFP32(config.width)
        self.spatial_ch_projs = nn.ModuleList(nn.Linear(config.width, ch) for ch in config.unet_channels)
        for proj in self.spatial_ch_projs:
            nn.init.zeros_(proj.weight)
            nn.init.zeros_(proj.bias)
        self.seq_proj = nn.Parameter(torch.zeros(config.width, config.width))

    def _tokens(self, task: int, value: list[Tensor] | Tensor) -> Tensor:
        if isinstance(value, Tensor):
            return value + self.task_embedding[task].to(value.dtype)
        pooled = [mapping(feature.mean(dim=(2, 3))) for mapping, feature in zip(self.spatial_feat_mapping, value,
                                                                                 strict=True)]
        tokens = torch.stack(pooled, dim=1)
        return tokens + self.task_embedding[task].to(tokens.dtype) + self.positional_embedding.to(tokens.dtype)

    def forward(self, inputs: Sequence[FuserInput]) -> tuple[list[Tensor] | None, Tensor | None]:
        if not inputs:
            return None, None
        x = torch.cat([self._tokens(task, value) for task, value in inputs], dim=1)
        x = self.ln_post(self.transformer_layes(self.ln_pre(x)))
        maps: list[Tensor] | None = None
        sequences: list[Tensor] = []
        start = 0
        for _, value in inputs:
            if isinstance(value, Tensor):
                length = value.shape[1]
                sequences.append(value * (x[:, start : start + length] @ self.seq_proj.to(x.dtype) + 1))
                start += length
                continue
            scaled = [feature * (proj(x[:, start + level]) + 1)[:, :, None, None]
                      for level, (proj, feature) in enumerate(zip(self.spatial_ch_projs, value, strict=True))]
            maps = scaled if maps is None else [a + b for a, b in zip(maps, scaled, strict=True)]
            start += len(value)
        return maps, torch.cat(sequences, dim=1) if sequences else None
