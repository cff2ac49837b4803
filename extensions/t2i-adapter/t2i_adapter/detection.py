"""Adapter detection as data: a state dict's keys and shapes -> which architecture, with which sizes.

``normalize_state_dict`` brings every accepted layout to the released files' key names: a ``module.`` prefix (DDP
training), the ``adapter.`` prefix of Lightning checkpoints, and diffusers' ``T2IAdapter`` layout
(``adapter.body.i.resnets.j``), which is renamed. ``detect`` then reads the sizes back from tensor shapes and returns
an :class:`AdapterSpec`; ``build_module`` makes the (unloaded) module. Nothing here reads files.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from .adapter_full import SDXL_DOWNSAMPLES, Adapter, FullAdapterConfig
from .adapter_light import AdapterLight, LightAdapterConfig
from .adapter_types import AdapterFormatError
from .coadapter_fuser import CoAdapterFuser, FuserConfig
from .style_adapter import StyleAdapter, StyleAdapterConfig

AdapterConfig = FullAdapterConfig | LightAdapterConfig | StyleAdapterConfig | FuserConfig


@dataclass(frozen=True)
class AdapterSpec:
    kind: str  # full | light | style | coadapter_fuser | sdxl
    family: str  # sd1 | sdxl
    cond_channels: int  # 0 for the token-only fuser; 3 for style (an RGB picture)
    config: AdapterConfig


def _strip(key: str, prefix: str) -> str:
    return key[len(prefix):] if key.startswith(prefix) else key


def _from_diffusers(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """diffusers T2IAdapter keys -> original keys (full, full_xl and light layouts)."""
    light = not any(k.startswith("adapter.conv_in.") for k in state_dict)
    per_level = 1 + max((int(m.group(1)) for k in state_dict
                         if (m := re.match(r"adapter\.body\.0\.resnets\.(\d+)\.", k))), default=0)
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        name = _strip(key, "adapter.")
        if m := re.match(r"body\.(\d+)\.resnets\.(\d+)\.(.*)", name):
            level, j, rest = int(m.group(1)), int(m.group(2)), m.group(3)
            name = f"body.{level}.body.{j}.{rest}" if light else f"body.{level * per_level + j}.{rest}"
        elif not light and (m := re.match(r"body\.(\d+)\.in_conv\.(.*)", name)):
            name = f"body.{int(m.group(1)) * per_level}.in_conv.{m.group(2)}"
        out[name] = value
    return out


def is_diffusers_layout(state_dict: Mapping[str, Tensor]) -> bool:
    return any(k.startswith("adapter.body.") and ".resnets." in k for k in state_dict)


def normalize_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Released key names from released, ``module.``-prefixed, Lightning (``adapter.``) or diffusers layouts."""
    sd = {_strip(k, "module."): v for k, v in state_dict.items()}
    if is_diffusers_layout(sd):
        return _from_diffusers(sd)
    return {_strip(k, "adapter."): v for k, v in sd.items()}


def _split_cin(cin: int, source: str) -> tuple[int, int]:
    """(condition channels, unshuffle factor) from conv_in's input width: 3 * f^2 (RGB) or f^2 (one channel)."""
    for channels in (3, 1):
        if cin % channels == 0:
            factor = math.isqrt(cin // channels)
            if factor * factor * channels == cin:
                return channels, factor
    raise AdapterFormatError(f"{source}: the adapter's first layer takes {cin} channels, which is not "
                             "f*f (one-channel) or 3*f*f (RGB) for a pixel-unshuffle factor f.")


def _indices(state_dict: Mapping[str, Tensor], pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for k in state_dict if (m := re.match(pattern, k))})


def _detect_full(sd: Mapping[str, Tensor], source: str, hints: Mapping[str, Any]) -> AdapterSpec:
    cin = int(sd["conv_in.weight"].shape[1])
    cond_channels, factor = _split_cin(cin, source)
    blocks = _indices(sd, r"body\.(\d+)\.")
    if not blocks or blocks != list(range(len(blocks))):
        raise AdapterFormatError(f"{source}: a full adapter needs body.0 .. body.N blocks; found {blocks[:10]}.")
    if "body.0.block2.weight" not in sd:
        raise AdapterFormatError(f"{source}: body.0.block2.weight is missing; the file is incomplete.")
    ksize = int(sd["body.0.block2.weight"].shape[-1])
    sk = "body.0.skep.weight" not in sd
    down_conv = {i for i in blocks if f"body.{i}.down_opt.op.weight" in sd}
    changes = {i for i in blocks if f"body.{i}.in_conv.weight" in sd} if sk else set()
    nums_rb = int(hints.get("num_res_blocks") or 0) or next(
        (n for n in (2, 3, 4, 5, 6, 1) if len(blocks) % n == 0 and all(i % n == 0 for i in changes | down_conv)), 0)
    if not nums_rb:
        raise AdapterFormatError(f"{source}: cannot split {len(blocks)} blocks into equal levels.")
    levels = len(blocks) // nums_rb
    channels, current = [], int(sd["conv_in.weight"].shape[0])
    for level in range(levels):
        key = f"body.{level * nums_rb}.in_conv.weight"
        if key in sd:
            current = int(sd[key].shape[0])
        channels.append(current)
    use_conv = bool(down_conv)
    xl = hints.get("adapter_type") == "full_adapter_xl" or (factor == 16 and levels == len(SDXL_DOWNSAMPLES)
                                                            and hints.get("adapter_type") != "full_adapter")
    if use_conv:
        downsamples: tuple[bool, ...] | None = tuple(level * nums_rb in down_conv for level in range(levels))
    else:
        downsamples = SDXL_DOWNSAMPLES if xl else None
    config = FullAdapterConfig(channels=tuple(channels), nums_rb=nums_rb, cond_channels=cond_channels,
                               unshuffle=factor, ksize=ksize, sk=sk, use_conv=use_conv, downsamples=downsamples)
    return AdapterSpec("sdxl" if xl else "full", "sdxl" if xl else "sd1", cond_channels, config)


def _detect_light(sd: Mapping[str, Tensor], source: str) -> AdapterSpec:
    levels = _indices(sd, r"body\.(\d+)\.out_conv\.weight")
    if levels != list(range(len(levels))):
        raise AdapterFormatError(f"{source}: a light adapter needs body.0 .. body.N extractors; found {levels}.")
    cond_channels, factor = _split_cin(int(sd["body.0.in_conv.weight"].shape[1]), source)
    config = LightAdapterConfig(
        channels=tuple(int(sd[f"body.{i}.out_conv.weight"].shape[0]) for i in levels),
        nums_rb=len(_indices(sd, r"body\.0\.body\.(\d+)\.")),
        cond_channels=cond_channels,
        unshuffle=factor,
        inner_channels=tuple(int(sd[f"body.{i}.in_conv.weight"].shape[0]) for i in levels),
    )
    return AdapterSpec("light", "sdxl" if factor == 16 else "sd1", cond_channels, config)


def _detect_style(sd: Mapping[str, Tensor]) -> AdapterSpec:
    embedding = sd["style_embedding"]
    config = StyleAdapterConfig(width=int(embedding.shape[2]), context_dim=int(sd["proj"].shape[1]),
                                layers=len(_indices(sd, r"transformer_layes\.(\d+)\.")),
                                num_token=int(embedding.shape[1]))
    return AdapterSpec("style", "sdxl" if config.context_dim == 2048 else "sd1", 3, config)


def _detect_fuser(sd: Mapping[str, Tensor]) -> AdapterSpec:
    levels = _indices(sd, r"spatial_feat_mapping\.(\d+)\.")
    config = FuserConfig(
        unet_channels=tuple(int(sd[f"spatial_feat_mapping.{i}.1.weight"].shape[1]) for i in levels),
        width=int(sd["task_embedding"].shape[1]),
        layers=len(_indices(sd, r"transformer_layes\.(\d+)\.")),
        tasks=int(sd["task_embedding"].shape[0]),
    )
    return AdapterSpec("coadapter_fuser", "sd1", 0, config)


def _not_an_adapter(sd: Mapping[str, Tensor], source: str) -> AdapterFormatError:
    keys = list(sd)
    if any("input_hint_block" in k for k in keys):
        return AdapterFormatError(f"{source} is a ControlNet model, not a T2I-Adapter.",
                                  "Put it in the ControlNet models folder instead.")
    if any(k.startswith(("model.diffusion_model.", "first_stage_model.")) for k in keys):
        return AdapterFormatError(f"{source} is a Stable Diffusion checkpoint, not a T2I-Adapter.",
                                  "Put it in models/Stable-diffusion instead.")
    if not keys:
        return AdapterFormatError(f"{source} holds no tensors.")
    shown = ", ".join(f"{k} {tuple(sd[k].shape)}" for k in keys[:4])
    return AdapterFormatError(f"{source} is not a known T2I-Adapter layout ({len(keys)} tensors, e.g. {shown}).")


def detect(state_dict: Mapping[str, Tensor], source: str = "state dict",
           hints: Mapping[str, Any] | None = None) -> AdapterSpec:
    """The architecture of a normalised state dict; ``hints`` is a diffusers ``config.json`` when there is one."""
    sd, hints = state_dict, hints or {}
    try:
        if "task_embedding" in sd and "seq_proj" in sd:
            return _detect_fuser(sd)
        if "style_embedding" in sd and "proj" in sd:
            return _detect_style(sd)
        if "conv_in.weight" in sd:
            return _detect_full(sd, source, hints)
        if "body.0.in_conv.weight" in sd and "body.0.out_conv.weight" in sd:
            return _detect_light(sd, source)
    except KeyError as e:
        raise AdapterFormatError(f"{source}: the adapter's tensor {e.args[0]} is missing; the file is incomplete.") \
            from e
    except (IndexError, ValueError) as e:
        if isinstance(e, AdapterFormatError):
            raise
        raise AdapterFormatError(f"{source}: unexpected tensor shapes ({e}).") from e
    raise _not_an_adapter(sd, source)


def build_module(spec: AdapterSpec) -> nn.Module:
    """The module for ``spec`` (random init; build it under ``torch.device('meta')`` to skip that cost)."""
    config = spec.config
    if isinstance(config, FullAdapterConfig):
        return Adapter(config)
    if isinstance(config, LightAdapterConfig):
        return AdapterLight(config)
    if isinstance(config, StyleAdapterConfig):
        return StyleAdapter(config)
    return CoAdapterFuser(config)

