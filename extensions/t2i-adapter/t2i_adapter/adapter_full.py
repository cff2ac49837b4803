"""The full T2I-Adapter (SD1.x ``Adapter`` and SDXL ``Adapter_XL``): condition image -> one feature map per UNet level.

Parameter names are the released ``.pth`` files' keys (``conv_in``, ``body.N.{in_conv,block1,block2,skep,down_opt}``),
so ``load_state_dict(strict=True)`` checks the architecture. One class serves both families; they differ only in the
pixel-unshuffle factor (8 for SD1, 16 for SDXL) and in which levels halve the size (SD1: every level but the first;
SDXL: only the third). Downsampling average-pools with ``ceil_mode`` so that sizes that are not multiples of 64 give
the same feature sizes as the UNet's stride-2 convolutions (identical to floor mode when they are).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

SDXL_DOWNSAMPLES = (False, False, True, False)


@dataclass(frozen=True)
class FullAdapterConfig:
    """Sizes of a full adapter. Defaults are the released SD1.x files (RGB condition; sketch/canny use 1 channel)."""

    channels: tuple[int, ...] = (320, 640, 1280, 1280)
    nums_rb: int = 2
    cond_channels: int = 3
    unshuffle: int = 8
    ksize: int = 1
    sk: bool = True
    use_conv: bool = False
    downsamples: tuple[bool, ...] | None = None  # per level; None: every level but the first halves the size

    @property
    def cin(self) -> int:
        return self.cond_channels * self.unshuffle**2

    @property
    def level_downsamples(self) -> tuple[bool, ...]:
        if self.downsamples is not None:
            return self.downsamples
        return tuple(level > 0 for level in range(len(self.channels)))


def sdxl_config(cond_channels: int = 3) -> FullAdapterConfig:
    """The released SDXL adapter's sizes (``adapter-xl-*``, diffusers ``full_adapter_xl``)."""
    return FullAdapterConfig(cond_channels=cond_channels, unshuffle=16, downsamples=SDXL_DOWNSAMPLES)


class Downsample(nn.Module):
    """Halve height and width: a strided 3x3 conv (``use_conv``, weights ``op.*``) or a 2x2 average pool."""

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        if self.use_conv:
            return self.op(x)
        return F.avg_pool2d(x, 2, 2, ceil_mode=True)


class ResnetBlock(nn.Module):
    """Optional downsample -> optional channel change (``in_conv``) -> conv3x3, ReLU, conv(ksize) + skip.

    With ``sk`` (every released file) the skip is the identity and ``in_conv`` exists only where channels change;
    without it both ``in_conv`` and a ``skep`` conv exist.
    """

    def __init__(self, in_c: int, out_c: int, down: bool, ksize: int = 3, sk: bool = False,
                 use_conv: bool = True) -> None:
        super().__init__()
        pad = ksize // 2
        self.down_opt = Downsample(in_c, use_conv) if down else None
        self.in_conv = nn.Conv2d(in_c, out_c, ksize, 1, pad) if (in_c != out_c or not sk) else None
        self.block1 = nn.Conv2d(out_c, out_c, 3, 1, 1)
        self.act = nn.ReLU()
        self.block2 = nn.Conv2d(out_c, out_c, ksize, 1, pad)
        self.skep = None if sk else nn.Conv2d(out_c, out_c, ksize, 1, pad)

    def forward(self, x: Tensor) -> Tensor:
        if self.down_opt is not None:
            x = self.down_opt(x)
        if self.in_conv is not None:
            x = self.in_conv(x)
        h = self.block2(self.act(self.block1(x)))
        return h + (self.skep(x) if self.skep is not None else x)


class Adapter(nn.Module):
    """Condition (N, cond_channels, H, W) in [0, 1] -> one feature map per level, deepest last.

    SD1 at 512x512: [320, 64, 64], [640, 32, 32], [1280, 16, 16], [1280, 8, 8] (the UNet's encoder levels).
    SDXL at 1024x1024: [320, 64, 64], [640, 64, 64], [1280, 32, 32], [1280, 32, 32].
    H and W must be multiples of ``config.unshuffle`` (``features.prepare_condition`` pads them).
    """

    def __init__(self, config: FullAdapterConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or FullAdapterConfig()
        self.unshuffle = nn.PixelUnshuffle(config.unshuffle)
        self.conv_in = nn.Conv2d(config.cin, config.channels[0], 3, 1, 1)
        blocks = []
        for level, (channels, down) in enumerate(zip(config.channels, config.level_downsamples, strict=True)):
            for j in range(config.nums_rb):
                first = j == 0
                in_c = config.channels[level - 1] if first and level > 0 else channels
                blocks.append(ResnetBlock(in_c, channels, down=first and down, ksize=config.ksize, sk=config.sk,
                                          use_conv=config.use_conv))
        self.body = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> list[Tensor]:
        h = self.conv_in(self.unshuffle(x))
        features = []
        for index, block in enumerate(self.body):
            h = block(h)
            if (index + 1) % self.config.nums_rb == 0:
                features.append(h)
        return features
