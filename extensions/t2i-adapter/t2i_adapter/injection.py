"""Adapter features -> the UNet's hook points (``modules.sd.unet.UNetHooks``).

SD1.x: feature k is added right after the last input block of UNet level k (blocks 2, 5, 8, 11), before it is kept
for the skip connection — as the original ``features_adapter`` and diffusers' ``down_intrablock_additional_residuals``.
SDXL: after input blocks 3 (the first downsample), 5 and 8, and the fourth feature after the middle block. Several
units are weighted and summed (the original's rule, not diffusers' MultiAdapter average); style tokens are weighted
and concatenated into ``extra_context``. With a CoAdapter fuser the weighted outputs are fused first.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from modules.sd.unet import UNetConfig, UNetHooks

from .adapter_types import AdapterFeatures, LoadedAdapter
from .coadapter_fuser import task_index

SD1_POINTS = (2, 5, 8, 11)
SDXL_POINTS = (3, 5, 8)


def _level_layout(config: UNetConfig) -> tuple[list[int], list[int]]:
    """(index of the last res block of each level, index of each level's downsample) in ``input_blocks``."""
    ends, downs, index = [], [], 0
    for level in range(len(config.channel_mult)):
        index += config.num_res_blocks
        ends.append(index)
        if level != len(config.channel_mult) - 1:
            index += 1
            downs.append(index)
    return ends, downs


def injection_points(family: str, unet_config: UNetConfig | None = None) -> tuple[tuple[int, ...], bool]:
    """(input blocks that receive features, whether one more feature goes after the middle block)."""
    if family == "sdxl":
        if unet_config is None:
            return SDXL_POINTS, True
        ends, downs = _level_layout(unet_config)
        if len(ends) != 3:
            raise ValueError(f"an SDXL adapter needs a 3-level SDXL UNet; this one has {len(ends)} levels")
        return (downs[0], ends[1], ends[2]), True
    if unet_config is None:
        return SD1_POINTS, False
    return tuple(_level_layout(unet_config)[0]), False


def feature_channels(unet_config: UNetConfig, family: str) -> tuple[int, ...]:
    """The channels an adapter must produce at each injection point of this UNet (its ``channels`` config)."""
    mc, mult = unet_config.model_channels, unet_config.channel_mult
    if family == "sdxl":
        return mc * mult[0], mc * mult[1], mc * mult[2], mc * mult[2]
    return tuple(mc * m for m in mult)


def _resize_like(feature: Tensor, like: Tensor) -> Tensor:
    if feature.shape[-2:] != like.shape[-2:]:
        feature = F.interpolate(feature.to(like.dtype), size=like.shape[-2:], mode="nearest")
    return feature.to(like.dtype)


def _sum_maps(total: list[Tensor] | None, maps: Sequence[Tensor]) -> list[Tensor]:
    if total is None:
        return list(maps)
    if len(maps) != len(total):
        raise ValueError(f"adapters disagree on the number of feature maps ({len(total)} vs {len(maps)}); "
                         "they were made for different model families")
    return [a + _resize_like(b, a) for a, b in zip(total, maps, strict=True)]


def _fuse(fuser: LoadedAdapter, units: Sequence[tuple[AdapterFeatures, float]],
          conditions: Sequence[str | None]) -> tuple[list[Tensor] | None, Tensor | None]:
    inputs = []
    parameter = next(fuser.module.parameters())
    for index, (unit, weight) in enumerate(units):
        condition = conditions[index] if index < len(conditions) and conditions[index] else unit.condition
        if unit.style_tokens is not None:
            inputs.append((task_index(condition), unit.style_tokens.to(parameter) * weight))
        if unit.features is not None:
            inputs.append((task_index(condition), [f.to(parameter) * weight for f in unit.features]))
    with torch.no_grad():
        return fuser.module(inputs)


def unet_hooks_for(units: Sequence[tuple[AdapterFeatures, float]], family: str, fuser: LoadedAdapter | None = None,
                   conditions: Sequence[str | None] = (), *, unet_config: UNetConfig | None = None) -> UNetHooks | None:
    """UNet hooks adding the weighted sum of all units' features (and their style tokens); None when nothing is on.

    ``conditions`` name each unit's condition for the fuser (default: the unit's own ``condition``). ``unet_config``
    maps features onto a UNet with another level layout (e.g. the demo model); None means the standard layout.
    """
    active = [(unit, float(weight)) for unit, weight in units if weight]
    if not active:
        return None
    if fuser is not None:
        maps, tokens = _fuse(fuser, active, [conditions[i] if i < len(conditions) else None
                                             for i, (_, weight) in enumerate(units) if weight])
    else:
        maps, token_parts = None, []
        for unit, weight in active:
            if unit.features is not None:
                maps = _sum_maps(maps, [f * weight for f in unit.features])
            if unit.style_tokens is not None:
                token_parts.append(unit.style_tokens * weight)
        tokens = torch.cat(token_parts, dim=1) if token_parts else None
    return hooks_from_maps(maps, tokens, family, unet_config)


def hooks_from_maps(maps: Sequence[Tensor] | None, tokens: Tensor | None, family: str,
                    unet_config: UNetConfig | None = None) -> UNetHooks:
    """Place final feature maps at the injection points (the last one after the middle block for SDXL)."""
    hooks = UNetHooks(extra_context=tokens)
    if maps is not None:
        points, middle = injection_points(family, unet_config)
        if len(maps) != len(points) + middle:
            raise ValueError(f"the adapter gives {len(maps)} feature maps but this {family} UNet takes "
                             f"{len(points) + middle}; the adapter was made for another model family")
        hooks.input_block_additions = dict(zip(points, maps, strict=False))
        if middle:
            hooks.middle_block_addition = maps[-1]
    return hooks
