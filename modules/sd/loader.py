"""Loading a single-file checkpoint: read → detect → build on the meta device → assign weights in the target dtype.

Modules are built on the meta device (no random init, no memory), then each weight is read from the file, converted
straight to the target dtype and assigned; a `.safetensors` file's pages are released as they are consumed. Peak
memory is therefore about the model in its target dtype plus one tensor, not file + model.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from modules.errors import BadCheckpoint
from modules.sd import detection
from modules.sd.checkpoint import SafetensorsFile, read_state_dict
from modules.sd.detection import ModelConfig, TextEncoderSpec
from modules.sd.schedule import DiscreteSchedule
from modules.sd.text_encoders import (
    CLIPTextConfig,
    CLIPTextEncoder,
    OpenCLIPTextEncoder,
    fix_clip_state_dict,
    fix_open_clip_state_dict,
)
from modules.sd.unet import UNetModel
from modules.sd.vae import AutoencoderKL, fix_vae_state_dict

log = logging.getLogger(__name__)


@dataclass
class StableDiffusionModel:
    """A loaded checkpoint: its config, its parts, and the noise schedule the samplers drive it with."""

    config: ModelConfig
    unet: UNetModel
    vae: AutoencoderKL
    text_encoders: dict[str, nn.Module]
    schedule: DiscreteSchedule
    device: torch.device
    dtype: torch.dtype
    vae_dtype: torch.dtype
    path: Path | None = None
    extras: dict[str, object] = field(default_factory=dict)

    @property
    def family(self) -> str:
        return self.config.family

    @property
    def prediction_type(self) -> str:
        return self.schedule.prediction

    @property
    def is_sdxl(self) -> bool:
        return self.config.family in ("sdxl", "sdxl_refiner")

    @property
    def is_inpainting(self) -> bool:
        return self.config.is_inpainting


class _TensorSource:
    """Hands out tensors by (normalised) key from a mapped safetensors file or an in-memory state dict."""

    def __init__(self, path: Path, allow_unsafe: bool) -> None:
        self.file: SafetensorsFile | None = None
        if path.suffix.lower() == ".safetensors":
            self.file = SafetensorsFile(path)
            raw = {k: self.file.view(k) for k in self.file}
        else:
            raw = read_state_dict(path, allow_unsafe=allow_unsafe)
        sgm_sd2 = detection.is_sgm_sd2(raw)
        self.original_key = {new: k for k in raw if (new := detection.normalize_key(k, sgm_sd2)) is not None}
        self.tensors = {new: raw[old] for new, old in self.original_key.items()}

    def take(self, key: str, dtype: torch.dtype, device: torch.device) -> Tensor:
        """A converted copy of one tensor; its file pages are released afterwards."""
        value = self.tensors.pop(key)
        out = value.to(device=device, dtype=dtype if value.is_floating_point() else value.dtype, copy=True)
        if self.file is not None:
            self.file.release(self.original_key[key])
        return out

    def close(self) -> None:
        self.tensors.clear()
        if self.file is not None:
            self.file.close()


def _materialize(module: nn.Module, source: _TensorSource, prefix: str, dtype: torch.dtype, device: torch.device,
                 fixup: Callable[[Mapping[str, Tensor]], dict[str, Tensor]] | None, what: str) -> nn.Module:
    """Assign the weights under `prefix` to a meta-device module, converting one tensor at a time."""
    keys = {k[len(prefix):]: k for k in list(source.tensors) if k.startswith(prefix)}
    stripped = {short: source.tensors[full] for short, full in keys.items()}
    fixed = fixup(stripped) if fixup else stripped
    expected = set(module.state_dict().keys())
    missing = sorted(expected - set(fixed))
    unexpected = sorted(set(fixed) - expected)
    if missing:
        raise BadCheckpoint(f"The {what} weights are incomplete: {len(missing)} missing, e.g. {missing[:3]}.",
                            "The file may be damaged or of an unsupported variant.")
    if unexpected:
        log.debug("Ignoring %d unexpected %s keys, e.g. %s", len(unexpected), what, unexpected[:3])
    converted: dict[str, Tensor] = {}
    for short in expected:
        value = fixed[short]
        if short in keys and fixed[short] is stripped.get(short):
            converted[short] = source.take(keys[short], dtype, device)
        else:  # produced by a fix-up (reshaped or renamed): convert the new tensor
            converted[short] = value.to(device=device, dtype=dtype, copy=True)
            if short in keys:
                source.tensors.pop(keys[short], None)
    for full in keys.values():
        source.tensors.pop(full, None)
    module.load_state_dict(converted, strict=True, assign=True)
    leftover = [name for name, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if leftover:
        raise RuntimeError(f"{what}: tensors left on the meta device after loading: {leftover[:5]}")
    return module.eval().requires_grad_(False)


def text_encoder_for(spec: TextEncoderSpec) -> tuple[nn.Module, Callable]:
    """An (unloaded) text encoder for `spec` and the state-dict fix-up its files need."""
    if isinstance(spec.config, CLIPTextConfig):
        return CLIPTextEncoder(spec.config), fix_clip_state_dict
    return OpenCLIPTextEncoder(spec.config), fix_open_clip_state_dict


def build_model(config: ModelConfig, source: _TensorSource, *, device: torch.device, dtype: torch.dtype,
                vae_dtype: torch.dtype, text_encoder_dtype: torch.dtype | None = None) -> StableDiffusionModel:
    with torch.device("meta"):
        unet = UNetModel(config.unet)
        vae = AutoencoderKL(config.vae)
        encoders = {spec.name: (spec, *text_encoder_for(spec)) for spec in config.text_encoders}
    _materialize(unet, source, detection.UNET_PREFIX, dtype, device, None, "UNet")
    _materialize(vae, source, detection.VAE_PREFIX, vae_dtype, device, fix_vae_state_dict, "VAE")
    text_encoders = {}
    for name, (spec, module, fixup) in encoders.items():
        text_encoders[name] = _materialize(module, source, spec.prefix, text_encoder_dtype or dtype, device, fixup,
                                           f"text encoder ({name})")
    schedule = DiscreteSchedule.ldm_linear(config.prediction_type)
    return StableDiffusionModel(config=config, unet=unet, vae=vae, text_encoders=text_encoders, schedule=schedule,
                                device=device, dtype=dtype, vae_dtype=vae_dtype)


@torch.inference_mode()
def probe_prediction_type(unet: UNetModel) -> str:
    """A1111's test for SD2 768-v models: at t=999 on a constant input, a v-model's output is far below its input."""
    cfg = unet.config
    param = next(unet.parameters())
    x = torch.full((1, cfg.in_channels, 8, 8), 0.5, device=param.device, dtype=param.dtype)
    t = torch.tensor([999.0], device=param.device)
    context = torch.zeros((1, 77, cfg.context_dim), device=param.device, dtype=param.dtype)
    out = unet(x, t, context).float()
    diff = (out - x[:, : cfg.out_channels].float()).mean()
    return "v_prediction" if diff < -1 else "epsilon"


def load_model(path: str | os.PathLike[str], *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
               vae_dtype: torch.dtype | None = None, text_encoder_dtype: torch.dtype | None = None,
               allow_unsafe: bool = False, config: ModelConfig | None = None) -> StableDiffusionModel:
    """Load a single-file SD1/SD2/SDXL checkpoint; every failure is a `BadCheckpoint` naming the file."""
    path = Path(path)
    device = torch.device(device)
    source = _TensorSource(path, allow_unsafe)
    try:
        try:
            if config is None:
                config = detection.apply_override_file(detection.detect(source.tensors), path)
            model = build_model(config, source, device=device, dtype=dtype, vae_dtype=vae_dtype or dtype,
                                text_encoder_dtype=text_encoder_dtype)
        except BadCheckpoint as e:
            if path.name in e.message:
                raise
            raise BadCheckpoint(f"{path.name}: {e.message}", e.hint) from e
        except (KeyError, RuntimeError, ValueError, IndexError) as e:
            raise BadCheckpoint(f"{path.name} could not be loaded: {type(e).__name__}: {e}",
                                "The file may be damaged or of an unsupported model type.") from e
    finally:
        source.close()
    model.path = path
    if not config.prediction_type_certain:
        prediction = probe_prediction_type(model.unet)
        model.schedule = DiscreteSchedule(model.schedule.alphas_cumprod, prediction)
        log.info("%s: detected %s by probing the UNet.", path.name, prediction)
    return model
