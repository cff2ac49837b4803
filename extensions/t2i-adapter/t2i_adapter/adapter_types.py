"""The records the public API passes around: a loaded adapter, its computed features, and the format error."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from modules.errors import BadCheckpoint

KINDS = ("full", "light", "style", "coadapter_fuser", "sdxl")
FAMILIES = ("sd1", "sdxl")


class AdapterFormatError(BadCheckpoint, ValueError):
    """A file that is not a usable T2I-Adapter: unreadable, of another model type, or with unexpected tensors.

    The message names the file and what was seen; being a ``BadCheckpoint``, the API answers it with a 4xx body.
    """

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message, hint or "Put original T2I-Adapter .pth/.safetensors files or diffusers adapter "
                                          "folders in models/T2I-Adapter.")


@dataclass
class LoadedAdapter:
    """An adapter ready to run: what it is, what it fits, and its module (eval mode, frozen).

    ``config`` is the detected architecture config; ``clip_vision_dir`` is where a style adapter looks for the CLIP
    ViT-L/14 vision weights it needs to turn pictures into tokens (``models/clip_vision`` beside the adapter folder).
    """

    name: str
    path: Path
    kind: str
    family: str
    cond_channels: int
    condition: str | None
    module: nn.Module
    config: Any = None
    clip_vision_dir: Path | None = None
    cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def unshuffle(self) -> int:
        """Pixels per side folded into one feature position (8 for SD1, 16 for SDXL, 1 for token adapters)."""
        return int(getattr(self.config, "unshuffle", 1))


@dataclass
class AdapterFeatures:
    """One unit's adapter output: feature maps (one per injection point, UNet input-block order) or style tokens."""

    features: list[Tensor] | None
    style_tokens: Tensor | None
    condition: str | None = None
