"""The light T2I-Adapter (``Adapter_light``, the released colour adapter): a small extractor per UNet level.

Keys as in the released files: ``body.i.in_conv`` (1x1 to a quarter width), ``body.i.body.j.block{1,2}`` (3x3
residual blocks), ``body.i.out_conv`` (1x1 back to the level's channels). No ``conv_in``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class LightAdapterConfig:
    """Sizes of a light adapter; defaults are the released colour adapter (RGB, 4 blocks per level)."""

    channels: tuple[int, ...] = (320, 640, 1280, 1280)
    nums_rb: int = 4
    cond_channels: int = 3
    unshuffle: int = 8
    inner_channels: tuple[int, ...] | None = None  # None: a quarter of each level's channels

    @property
    def cin(self) -> int:
        return self.cond_channels * self.unshuffle**2

    @property
    def inner(self) -> tuple[int, ...]:
        return self.inner_channels if self.inner_channels is not None else tuple(c // 4 for c in self.channels)


class ResnetBlockLight(nn.Module):
    """conv3x3, ReLU, conv3x3, plus the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.act = nn.ReLU()
        self.block2 = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.block2(self.act(self.block1(x))) + x


class Extractor(nn.Module):
    """Optional 2x2 average pool, 1x1 in, residual blocks at the inner width, 1x1 out."""

    def __init__(self, in_c: int, inter_c: int, out_c: int, nums_rb: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.in_conv = nn.Conv2d(in_c, inter_c, 1)
        self.body = nn.Sequential(*[ResnetBlockLight(inter_c) for _ in range(nums_rb)])
        self.out_conv = nn.Conv2d(inter_c, out_c, 1)

    def forward(self, x: Tensor) -> Tensor:
        if self.down:
            x = F.avg_pool2d(x, 2, 2, ceil_mode=True)
        return self.out_conv(self.body(self.in_conv(x)))


class AdapterLight(nn.Module):
    """Condition (N, cond_channels, H, W) in [0, 1] -> one feature map per level, same shapes as the full adapter."""

    def __init__(self, config: LightAdapterConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or LightAdapterConfig()
        self.unshuffle = nn.PixelUnshuffle(config.unshuffle)
        self.body = nn.ModuleList(
            Extractor(config.cin if i == 0 else config.channels[i - 1], config.inner[i], channels, config.nums_rb,
                      down=i > 0)
            for i, channels in enumerate(config.channels)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        h = self.unshuffle(x)
        features = []
        for extractor in self.body:
            h = extractor(h)
            features.append(h)
        return features
