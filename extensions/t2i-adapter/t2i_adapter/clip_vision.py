"""The picture encoder a style adapter needs: CLIP ViT-L/14's vision tower, read offline from ``models/clip_vision``.

Accepted: a transformers folder (``config.json`` + weights, e.g. ``clip-vit-large-patch14``) or one ``.safetensors``
file in the transformers key layout with or without the ``vision_model.`` prefix (the common ``clip_vision`` files);
for a single file the sizes are read from tensor shapes. A missing encoder is a ``MissingWeights`` error naming the
folder. Pictures are prepared like CLIP's processor: short side to the model's size (bicubic), centre crop, CLIP's
mean/std; the style adapter reads ``last_hidden_state`` (B, 257, 1024).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.errors import MissingWeights
from modules.sd.checkpoint import read_state_dict

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _find(folder: Path) -> Path | None:
    if (folder / "config.json").is_file():
        return folder
    candidates = sorted(p for p in folder.iterdir() if (p / "config.json").is_file() or p.suffix == ".safetensors")
    preferred = [p for p in candidates if re.search(r"vit-?l|l14|large", p.name.lower())]
    return (preferred or candidates or [None])[0]


def _from_single_file(path: Path) -> nn.Module:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    raw = read_state_dict(path)
    sd = {k.removeprefix("vision_model."): v for k, v in raw.items() if not k.startswith(("visual_projection", "text"))}
    patch = sd["embeddings.patch_embedding.weight"]
    positions = sd["embeddings.position_embedding.weight"].shape[0]
    hidden, patch_size = int(patch.shape[0]), int(patch.shape[-1])
    config = CLIPVisionConfig(
        hidden_size=hidden, patch_size=patch_size, image_size=patch_size * math.isqrt(positions - 1),
        num_hidden_layers=1 + max(int(m.group(1)) for k in sd if (m := re.match(r"encoder\.layers\.(\d+)\.", k))),
        intermediate_size=int(sd["encoder.layers.0.mlp.fc1.weight"].shape[0]), num_attention_heads=max(1, hidden // 64),
    )
    model = CLIPVisionModel(config)
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd and not k.endswith("position_ids")]
    if missing:
        raise MissingWeights(f"{path.name} is not a CLIP vision model ({len(missing)} tensors missing, e.g. "
                             f"{missing[:2]}).", "Use the CLIP ViT-L/14 vision weights.")
    model.load_state_dict({k: sd[k] for k in expected if k in sd}, strict=False)
    return model


def load_clip_vision(folder: Path | None, device: torch.device | str = "cpu",
                     dtype: torch.dtype = torch.float32) -> nn.Module:
    """The CLIP vision tower in ``folder`` (a transformers folder, or the first suitable file inside it)."""
    found = _find(folder) if folder is not None and folder.is_dir() else None
    if found is None:
        raise MissingWeights(
            f"The style adapter needs CLIP ViT-L/14 vision weights, and none were found in {folder}.",
            "Put the transformers folder clip-vit-large-patch14 (config.json + model.safetensors) or a "
            "clip_vision .safetensors file there.")
    if found.is_dir():
        from transformers import CLIPVisionModel

        model = CLIPVisionModel.from_pretrained(str(found), local_files_only=True)
    else:
        model = _from_single_file(found)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


@torch.no_grad()
def encode_pictures(encoder: nn.Module, pictures: Tensor) -> Tensor:
    """(B, 3, H, W) in [0, 1] -> CLIP vision ``last_hidden_state`` (B, 1 + patches, width)."""
    size = int(encoder.config.image_size)
    parameter = next(encoder.parameters())
    x = pictures.to(device=parameter.device, dtype=torch.float32)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    scale = size / min(x.shape[-2:])
    resized = (max(size, round(x.shape[-2] * scale)), max(size, round(x.shape[-1] * scale)))
    x = F.interpolate(x, size=resized, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    top, left = (resized[0] - size) // 2, (resized[1] - size) // 2
    x = x[:, :, top : top + size, left : left + size]
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    x = ((x - mean) / std).to(parameter.dtype)
    return encoder(pixel_values=x).last_hidden_state
