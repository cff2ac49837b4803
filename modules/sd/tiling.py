"""Seamless tiling (A1111's "Tiling" checkbox): every Conv2d of the UNet and VAE pads circularly, so the picture's
left edge continues its right edge and top continues bottom, and the image tiles without seams.

Why a flag on the layers rather than a patched forward: `nn.Conv2d` already pads by `padding_mode` (subclasses that
call `_conv_forward`, like `CastConv2d`, too), so switching the mode is the whole change. Each layer remembers its
original mode, so turning tiling off restores exactly what was there, whatever that was.
"""

from __future__ import annotations

from torch import nn

_ORIGINAL_MODE = "_atelier_untiled_padding_mode"


def set_tiling(module: nn.Module, enabled: bool) -> int:
    """Switch every Conv2d inside `module` to circular padding (`enabled`) or back to its own mode.

    Idempotent both ways. Returns how many layers changed, which is 0 when nothing needed doing.
    """
    changed = 0
    for layer in module.modules():
        if not isinstance(layer, nn.Conv2d):
            continue
        if enabled:
            if not hasattr(layer, _ORIGINAL_MODE):
                setattr(layer, _ORIGINAL_MODE, layer.padding_mode)
            if layer.padding_mode != "circular":
                layer.padding_mode = "circular"
                changed += 1
        elif hasattr(layer, _ORIGINAL_MODE):
            original = getattr(layer, _ORIGINAL_MODE)
            delattr(layer, _ORIGINAL_MODE)
            if layer.padding_mode != original:
                layer.padding_mode = original
                changed += 1
    return changed


def is_tiling(module: nn.Module) -> bool:
    """Whether tiling is on: some Conv2d inside `module` was switched by `set_tiling`."""
    return any(isinstance(layer, nn.Conv2d) and hasattr(layer, _ORIGINAL_MODE) for layer in module.modules())
