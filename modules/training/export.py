"""Write a trained demo model as one SD1 single-file ``.safetensors``, the layout every SD tool reads.

Keys are the original checkpoints' (``model.diffusion_model.*``, ``first_stage_model.*``,
``cond_stage_model.transformer.text_model.*``) because our modules are named after them; a v-prediction model also
carries the empty ``v_pred`` marker tensor that ComfyUI and our detector read. Weights are stored in fp16 (halves the
file; the loader converts back to the compute dtype and the change is far below what a 64-pixel picture shows).

``export_checkpoint`` then re-reads the file's header through the ordinary detector and refuses a file it would not
load with the same sizes, so a demo model can never need a special case in the pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from modules.sd import detection
from modules.sd.checkpoint import SafetensorsFile
from modules.training.demo_model_config import DemoModelConfig

TEXT_PREFIX = "cond_stage_model."


def _prefixed(module: nn.Module, prefix: str, dtype: torch.dtype) -> dict[str, Tensor]:
    out = {}
    for key, value in module.state_dict().items():
        value = value.detach()
        if value.device.type not in ("cpu", "meta"):  # meta: shapes only, for detection checks
            value = value.cpu()
        out[prefix + key] = (value.to(dtype) if value.is_floating_point() else value).contiguous()
    return out


def checkpoint_state_dict(unet: nn.Module, vae: nn.Module, text_encoder: nn.Module, prediction_type: str,
                          dtype: torch.dtype = torch.float16) -> dict[str, Tensor]:
    """The single-file state dict of the three parts, in ``dtype``."""
    sd = _prefixed(unet, detection.UNET_PREFIX, dtype)
    sd |= _prefixed(vae, detection.VAE_PREFIX, dtype)
    sd |= _prefixed(text_encoder, TEXT_PREFIX, dtype)
    if prediction_type == "v_prediction":
        sd["v_pred"] = torch.tensor([])
    return sd


def export_checkpoint(path: Path, config: DemoModelConfig, unet: nn.Module, vae: nn.Module, text_encoder: nn.Module,
                      *, dtype: torch.dtype = torch.float16, metadata: dict[str, object] | None = None) -> Path:
    """Save the model at ``path`` and check that detection reads back ``config``; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = checkpoint_state_dict(unet, vae, text_encoder, config.prediction_type, dtype)
    info = {"modelspec.architecture": "stable-diffusion-v1", "modelspec.title": "Atelier demo model",
            "modelspec.resolution": f"{config.image_size}x{config.image_size}",
            "modelspec.prediction_type": config.prediction_type}
    info |= {key: value if isinstance(value, str) else json.dumps(value) for key, value in (metadata or {}).items()}
    temporary = path.with_name(path.name + ".tmp")
    save_file(sd, str(temporary), metadata=info)
    try:
        check_detected(temporary, config)
    except Exception:
        temporary.unlink(missing_ok=True)
        raise
    temporary.replace(path)
    return path


def check_detected(path: Path, config: DemoModelConfig) -> detection.ModelConfig:
    """Detect the file's family and sizes from its header; raise ValueError when they differ from ``config``."""
    file = SafetensorsFile(path)
    try:
        found = detection.detect({key: file.view(key) for key in file})
    finally:
        file.close()
    clip = found.text_encoders[0].config
    expected_vae = config.vae
    problems = []
    if found.family != "sd1":
        problems.append(f"family {found.family}, expected sd1")
    if found.unet != config.unet:
        problems.append(f"UNet {found.unet} != {config.unet}")
    if found.vae != expected_vae:
        problems.append(f"VAE {found.vae} != {expected_vae}")
    if clip != config.text:
        problems.append(f"text encoder {clip} != {config.text}")
    if found.prediction_type != config.prediction_type:
        problems.append(f"prediction {found.prediction_type}, expected {config.prediction_type}")
    if problems:
        raise ValueError(f"{path.name} would not load as trained: " + "; ".join(problems))
    return found
