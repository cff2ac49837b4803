"""Finding and loading adapter files: read -> normalise keys -> detect -> build on the meta device -> strict load.

Accepted: the released ``.pth`` files (plain dicts of tensors), ``.safetensors`` repacks, training checkpoints
(``state_dict`` wrapper, ``module.``/``adapter.`` prefixes), and diffusers adapter folders (``config.json`` +
``diffusion_pytorch_model[.fp16].safetensors`` or ``.bin``). Pickles are read with the project's restricted
unpickler. Every failure is an :class:`AdapterFormatError` naming the file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from modules.errors import BadCheckpoint
from modules.sd.checkpoint import read_state_dict

from .adapter_types import AdapterFormatError, LoadedAdapter
from .detection import build_module, detect, normalize_state_dict

ADAPTER_SUFFIXES = (".pth", ".pt", ".safetensors")
DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                     "diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin")
# Checked in this order: the first name found in the file name wins ("openpose" before "pose"-like words).
CONDITION_WORDS = ("openpose", "keypose", "zoedepth", "depth", "canny", "sketch", "lineart", "seg", "color", "style",
                   "mask", "edge")


def guess_condition(name: str) -> str | None:
    """The condition a file name announces: ``t2iadapter_canny_sd15v2`` -> canny, ``depth-zoe-sdxl`` -> zoedepth."""
    lowered = name.lower()
    if "fuser" in lowered:
        return None
    if re.search(r"zoe", lowered):
        return "zoedepth"
    return next((word for word in CONDITION_WORDS if word in lowered), None)


def is_diffusers_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file() and any((path / n).is_file() for n in DIFFUSERS_WEIGHTS)


def list_adapter_files(folder: Path) -> list[Path]:
    """Adapter files (.pth/.pt/.safetensors) and diffusers adapter folders under ``folder``, sorted by relative path."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found: list[Path] = []

    def walk(directory: Path) -> None:
        for entry in sorted(directory.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                if is_diffusers_folder(entry):
                    found.append(entry)
                else:
                    walk(entry)
            elif entry.suffix.lower() in ADAPTER_SUFFIXES:
                found.append(entry)

    walk(folder)
    return sorted(found, key=lambda p: str(p.relative_to(folder)).lower())


def _read_diffusers_folder(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    try:
        hints = json.loads((path / "config.json").read_text(encoding="utf8"))
    except (OSError, ValueError) as e:
        raise AdapterFormatError(f"{path.name}/config.json could not be read: {e}") from e
    if not isinstance(hints, dict):
        raise AdapterFormatError(f"{path.name}/config.json is not a JSON object.")
    if hints.get("_class_name", "T2IAdapter") != "T2IAdapter":
        raise AdapterFormatError(f"{path.name} is a diffusers {hints.get('_class_name')}, not a T2IAdapter.")
    weights = next(path / n for n in DIFFUSERS_WEIGHTS if (path / n).is_file())
    return read_state_dict(weights), hints


def read_adapter_state_dict(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(state dict in released key names, diffusers config or {}) of an adapter file or folder."""
    path = Path(path)
    try:
        if path.is_dir():
            if not is_diffusers_folder(path):
                raise AdapterFormatError(f"{path.name} is a folder without config.json and "
                                         f"diffusion_pytorch_model weights, so it is not a diffusers adapter.")
            raw, hints = _read_diffusers_folder(path)
        else:
            raw, hints = read_state_dict(path), {}
    except AdapterFormatError:
        raise
    except BadCheckpoint as e:
        raise AdapterFormatError(e.message if path.name in e.message else f"{path.name}: {e.message}", e.hint) from e
    return normalize_state_dict(raw), hints


def _strict_load(module: torch.nn.Module, state_dict: Mapping[str, Tensor], source: str) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = [f"{k} {tuple(state_dict[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
             if k in state_dict and state_dict[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing (e.g. {missing[:3]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})" if unexpected else "",
                 f"wrong shapes: {wrong[:3]}" if wrong else ""]
        raise AdapterFormatError(f"{source} does not match the detected architecture: "
                                 + "; ".join(p for p in parts if p) + ".")
    module.load_state_dict(dict(state_dict), strict=True, assign=True)


def module_from_state_dict(state_dict: Mapping[str, Tensor], source: str = "state dict",
                           hints: Mapping[str, Any] | None = None, device: torch.device | str = "cpu",
                           dtype: torch.dtype = torch.float32):
    """(spec, module) for a normalised state dict: detected, built on meta, loaded strictly, frozen, eval mode."""
    spec = detect(state_dict, source, hints)
    with torch.device("meta"):
        module = build_module(spec)
    converted = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype, copy=True).contiguous()
                 for k, v in state_dict.items()}  # copies: never keep views of a mapped file
    _strict_load(module, converted, source)
    return spec, module.eval().requires_grad_(False)


def load_adapter(path: Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> LoadedAdapter:
    """Load an adapter file or diffusers folder; anything unusable is an :class:`AdapterFormatError`."""
    path = Path(path)
    if not path.exists():
        raise AdapterFormatError(f"{path} does not exist.")
    state_dict, hints = read_adapter_state_dict(path)
    spec, module = module_from_state_dict(state_dict, path.name, hints, device, dtype)
    name = path.name if path.is_dir() else path.stem
    return LoadedAdapter(
        name=name, path=path, kind=spec.kind, family=spec.family, cond_channels=spec.cond_channels,
        condition="style" if spec.kind == "style" else guess_condition(name), module=module, config=spec.config,
        clip_vision_dir=path.resolve().parent.parent / "clip_vision" if spec.kind == "style" else None,
    )
