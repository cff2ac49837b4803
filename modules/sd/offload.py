"""`--medvram` / `--lowvram`: keep model parts in CPU memory and move each to the GPU only while it runs.

A1111's scheme, done with forward pre-hooks on the parts (no patched methods): a `ModuleShuttle` owns a set of
modules parked on `offload_device`; right before one of them runs it is moved to `compute_device` and the one that
ran before goes back, so at most one part occupies GPU memory at a time.

- medvram: the parts are the UNet, the VAE's encoder/decoder (with their quant convs) and each text encoder.
- lowvram: the UNet is split further into its embeddings, every input block, the middle block, every output block and
  the output head, so only one block's weights are on the GPU at once (slow, but fits very small cards).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


class ModuleShuttle:
    """Moves registered modules to the compute device when they run, one at a time."""

    def __init__(self, compute_device: torch.device | str, offload_device: torch.device | str = "cpu") -> None:
        self.compute_device = torch.device(compute_device)
        self.offload_device = torch.device(offload_device)
        self.active: nn.Module | None = None
        self.modules: list[nn.Module] = []
        self._handles: list[Any] = []

    def register(self, modules: Iterable[nn.Module]) -> None:
        for module in modules:
            self._move(module, self.offload_device)
            self.modules.append(module)
            self._handles.append(module.register_forward_pre_hook(self._before_forward))

    def _before_forward(self, module: nn.Module, args: Any) -> None:
        if self.active is module:
            return
        if self.active is not None:
            self._move(self.active, self.offload_device)
        self._move(module, self.compute_device)
        self.active = module

    def _move(self, module: nn.Module, device: torch.device) -> None:
        module.to(device)

    def remove(self) -> None:
        """Detach the hooks and put every part on the compute device (leaving medvram/lowvram mode)."""
        for handle in self._handles:
            handle.remove()
        for module in self.modules:
            self._move(module, self.compute_device)
        self._handles.clear()
        self.modules.clear()
        self.active = None


def medvram_parts(model: Any) -> list[nn.Module]:
    """The UNet, the VAE halves and each text encoder of a `StableDiffusionModel`."""
    vae = model.vae
    return [model.unet, vae.encoder, vae.quant_conv, vae.decoder, vae.post_quant_conv, *model.text_encoders.values()]


def lowvram_unet_parts(unet: nn.Module) -> list[nn.Module]:
    """The UNet cut into blocks that run one after another."""
    parts: list[nn.Module] = [unet.time_embed]
    if getattr(unet, "label_emb", None) is not None:
        parts.append(unet.label_emb)
    return [*parts, *unet.input_blocks, unet.middle_block, *unet.output_blocks, unet.out]


def setup_offload(model: Any, compute_device: torch.device | str, *, lowvram: bool = False,
                  offload_device: torch.device | str = "cpu") -> ModuleShuttle:
    """Put `model` in medvram (or lowvram) mode; returns the shuttle (call `.remove()` to undo)."""
    shuttle = ModuleShuttle(compute_device, offload_device)
    parts = medvram_parts(model)
    if lowvram:
        parts = [*lowvram_unet_parts(model.unet), *parts[1:]]
    shuttle.register(parts)
    return shuttle


def offload_mode(*, medvram: bool, medvram_sdxl: bool, lowvram: bool, device: torch.device,
                 is_sdxl: bool) -> str | None:
    """Which mode the flags ask for on this device: "lowvram", "medvram" or None (CPU-only runs never shuttle)."""
    if device.type == "cpu":
        return None
    if lowvram:
        return "lowvram"
    if medvram or (medvram_sdxl and is_sdxl):
        return "medvram"
    return None
