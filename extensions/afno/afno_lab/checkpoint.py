"""Reading and writing AFNONet weights: the lab's own safetensors files and FourCastNet-style PyTorch checkpoints.

Loading is read → detect the architecture from key names and tensor shapes → build → ``load_state_dict(strict=True)``.
FourCastNet saves ``{"model_state": state_dict, ...}`` from a DistributedDataParallel model, so a ``module.`` prefix
is stripped. PyTorch files are read with ``weights_only=True`` (no code runs from a checkpoint).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from afno_lab.forecaster import Forecaster, StepperInfo
from afno_lab.model import AFNOConfig, AFNONet

FORMAT = "afno-lab-model-v1"
TORCH_SUFFIXES = (".pt", ".pth", ".tar", ".ckpt", ".bin")
# FourCastNet's token grid for ERA5 (720×1440 at patch 8); used when a checkpoint's pos_embed has exactly this many
FOURCASTNET_GRIDS = {16200: (90, 180), 4050: (45, 90)}


class CheckpointError(ValueError):
    """A file that cannot be turned into an AFNONet; the message says why."""


def strip_prefix(state: dict[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def _unwrap(obj: Any) -> dict[str, torch.Tensor]:
    """The state dict inside a training checkpoint (FourCastNet: ``model_state``), or the object itself."""
    if isinstance(obj, dict):
        for key in ("model_state", "state_dict", "model"):
            if isinstance(obj.get(key), dict):
                return obj[key]
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise CheckpointError("no AFNONet state dict found (looked for model_state, state_dict, model)")


def infer_config(state: dict[str, torch.Tensor], img_size: tuple[int, int] | None = None) -> AFNOConfig:
    """AFNONet's architecture from key names and shapes.

    The image size is not stored in the weights, only the token count (pos_embed); it is taken from ``img_size``,
    else FourCastNet's ERA5 grid when the count is 90×180, else a square grid.
    """
    required = ("patch_embed.proj.weight", "pos_embed", "head.weight", "blocks.0.filter.w1", "blocks.0.mlp.fc1.weight")
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"not an AFNONet state dict: missing {', '.join(missing)}")
    embed_dim, in_chans, ph, pw = state["patch_embed.proj.weight"].shape
    tokens = state["pos_embed"].shape[1]
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    _, num_blocks, block_size, hidden = state["blocks.0.filter.w1"].shape
    if hidden != block_size:
        raise CheckpointError(f"hidden_size_factor {hidden // block_size} is not supported (FourCastNet uses 1)")
    out_chans = state["head.weight"].shape[0] // (ph * pw)
    mlp_ratio = state["blocks.0.mlp.fc1.weight"].shape[0] / embed_dim
    band = "low"
    if img_size is None:
        if tokens in FOURCASTNET_GRIDS:
            h, w = FOURCASTNET_GRIDS[tokens]
            band = "fourcastnet"
        else:
            side = math.isqrt(tokens)
            if side * side != tokens:
                raise CheckpointError(f"{tokens} tokens is not a square grid; give the image size (height, width)")
            h = w = side
        img_size = (h * ph, w * pw)
    if (img_size[0] // ph) * (img_size[1] // pw) != tokens:
        raise CheckpointError(f"img_size {img_size} with patch {ph}x{pw} gives "
                              f"{(img_size[0] // ph) * (img_size[1] // pw)} tokens, the checkpoint has {tokens}")
    return AFNOConfig(img_size=tuple(img_size), patch_size=(ph, pw), in_chans=in_chans, out_chans=out_chans,
                      embed_dim=embed_dim, depth=depth, mlp_ratio=mlp_ratio, num_blocks=num_blocks, mode_band=band)


def build(state: dict[str, torch.Tensor], config: AFNOConfig | None = None,
          img_size: tuple[int, int] | None = None) -> AFNONet:
    """An AFNONet holding ``state`` (strict: every key and shape must match)."""
    state = strip_prefix(state)
    config = config or infer_config(state, img_size)
    with torch.device("meta"):
        net = AFNONet(config)
    problems = _mismatch(net.state_dict(), state)
    if problems:
        raise CheckpointError(f"the weights do not fit the architecture: {problems}")
    net.load_state_dict(state, strict=True, assign=True)
    return net.float()


def _mismatch(want: dict[str, torch.Tensor], got: dict[str, torch.Tensor], show: int = 4) -> str:
    """What keeps ``got`` from loading strictly into a model with ``want`` ('' when it fits)."""

    def listed(keys: list[str]) -> str:
        return ", ".join(keys[:show]) + (f" and {len(keys) - show} more" if len(keys) > show else "")

    missing = [k for k in want if k not in got]
    unexpected = [k for k in got if k not in want]
    shapes = [f"{k} {tuple(got[k].shape)} (expected {tuple(want[k].shape)})"
              for k in want if k in got and tuple(got[k].shape) != tuple(want[k].shape)]
    parts = [f"missing {listed(missing)}" if missing else "", f"unexpected {listed(unexpected)}" if unexpected else "",
             f"wrong shape {listed(shapes)}" if shapes else ""]
    return "; ".join(p for p in parts if p)


def save_model(path: Path, net: AFNONet, info: StepperInfo | None = None,
               extra: dict[str, Any] | None = None) -> Path:
    """Weights + architecture + stepper settings in one safetensors file (written atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "afno_config": json.dumps(net.config.to_dict())}
    if info is not None:
        meta["stepper"] = json.dumps(info.to_dict())
    if extra:
        meta["training"] = json.dumps(extra)
    tensors = {k: v.detach().float().contiguous().cpu() for k, v in net.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def read_metadata(path: Path) -> dict[str, Any]:
    """The lab's metadata of a safetensors model file, JSON-decoded ({} for foreign files)."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    out: dict[str, Any] = {}
    for key in ("afno_config", "stepper", "training"):
        if key in meta:
            out[key] = json.loads(meta[key])
    return out


def load_model(path: Path, img_size: tuple[int, int] | None = None) -> tuple[AFNONet, StepperInfo | None,
                                                                                   dict[str, Any]]:
    """(network, stepper settings or None, training metadata) from a lab file or a FourCastNet-style checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    meta: dict[str, Any] = {}
    try:
        if path.suffix == ".safetensors":
            meta = read_metadata(path)
            state = load_file(str(path))
        elif path.suffix in TORCH_SUFFIXES:
            state = _unwrap(torch.load(str(path), map_location="cpu", weights_only=True))
        else:
            raise CheckpointError(f"{path.name}: unknown file type; use .safetensors or {', '.join(TORCH_SUFFIXES)}")
    except CheckpointError:
        raise
    except Exception as e:  # torch / safetensors raise many types for damaged or unsafe files
        raise CheckpointError(f"{path.name} could not be read: {e}") from e
    config = AFNOConfig.from_dict(meta["afno_config"]) if "afno_config" in meta else None
    net = build(state, config, img_size)
    info = StepperInfo.from_dict(meta["stepper"]) if "stepper" in meta else None
    return net, info, meta.get("training", {})


def load_forecaster(path: Path) -> tuple[Forecaster, dict[str, Any]]:
    """A :class:`Forecaster` from a file; foreign single-channel checkpoints get default stepper settings."""
    net, info, training = load_model(path)
    if info is None:
        info = StepperInfo(history=net.config.in_chans, residual=False)
    try:
        return Forecaster(net, info), training
    except ValueError as e:
        raise CheckpointError(f"{Path(path).name}: {e}") from e
