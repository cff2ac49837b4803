"""Running an adapter once per generation: condition picture -> feature maps (or style tokens).

The condition arrives at the image size as (B, C, H, W) in [0, 1]. One-channel adapters (sketch, canny) take
channel 0 of an RGB map; RGB adapters get a grey map repeated. Sizes that are not a multiple of the adapter's
pixel-unshuffle factor (SDXL: 16) are padded at the bottom and right by repeating the edge, which keeps every pixel
where it was; the features then have the UNet's ceil-rounded sizes (and the UNet nearest-resizes any remainder).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .adapter_types import AdapterFeatures, LoadedAdapter


def prepare_condition(cond: Tensor, cond_channels: int, multiple: int) -> Tensor:
    """(B, C, H, W) in [0, 1] -> (B, cond_channels, H', W') with H', W' padded up to a multiple of ``multiple``."""
    if cond.dim() == 3:
        cond = cond.unsqueeze(0)
    if cond.dim() != 4:
        raise ValueError(f"a condition picture must be (B, C, H, W); got shape {tuple(cond.shape)}")
    if cond.shape[1] != cond_channels:
        if cond_channels == 1:
            cond = cond[:, :1]
        elif cond.shape[1] == 1:
            cond = cond.expand(-1, cond_channels, -1, -1)
        else:
            raise ValueError(f"the adapter takes {cond_channels}-channel conditions; got {cond.shape[1]} channels")
    pad_h, pad_w = (-cond.shape[2]) % multiple, (-cond.shape[3]) % multiple
    if pad_h or pad_w:
        cond = F.pad(cond, (0, pad_w, 0, pad_h), mode="replicate")
    return cond


def _module_device_dtype(adapter: LoadedAdapter) -> tuple[torch.device, torch.dtype]:
    parameter = next(adapter.module.parameters())
    return parameter.device, parameter.dtype


@torch.no_grad()
def compute_features(adapter: LoadedAdapter, cond: Tensor) -> AdapterFeatures:
    """Feature maps of a spatial adapter, or style tokens of a style adapter.

    A style adapter takes either CLIP ViT-L/14 vision tokens (B, 257, 1024) or a picture (B, 3, H, W) in [0, 1],
    which is encoded with the CLIP vision weights found in ``adapter.clip_vision_dir``.
    """
    device, dtype = _module_device_dtype(adapter)
    if adapter.kind == "coadapter_fuser":
        raise ValueError(f"{adapter.name} is a CoAdapter fuser: pass it as unet_hooks_for(fuser=...), "
                         "not as a unit's adapter")
    if adapter.kind == "style":
        tokens = cond if cond.dim() == 3 else _clip_tokens(adapter, cond)
        style = adapter.module(tokens.to(device=device, dtype=dtype))
        return AdapterFeatures(features=None, style_tokens=style, condition=adapter.condition)
    prepared = prepare_condition(cond, adapter.cond_channels, adapter.unshuffle).to(device=device, dtype=dtype)
    return AdapterFeatures(features=list(adapter.module(prepared)), style_tokens=None, condition=adapter.condition)


def _clip_tokens(adapter: LoadedAdapter, pictures: Tensor) -> Tensor:
    from .clip_vision import encode_pictures, load_clip_vision

    encoder = adapter.cache.get("clip_vision")
    if encoder is None:
        device, dtype = _module_device_dtype(adapter)
        encoder = adapter.cache["clip_vision"] = load_clip_vision(adapter.clip_vision_dir, device, dtype)
    return encode_pictures(encoder, pictures)
