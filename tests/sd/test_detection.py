"""Tests for modules/sd/detection.py: family and sizes from keys and shapes, at full size on the meta device."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from modules.errors import BadCheckpoint
from modules.sd import detection
from modules.sd.text_encoders import (
    SD1_CLIP_L,
    SD2_OPENCLIP_H,
    SDXL_OPENCLIP_BIGG,
    CLIPTextEncoder,
    OpenCLIPTextEncoder,
)
from modules.sd.unet import SD2_UNET, SD15_UNET, SDXL_REFINER_UNET, SDXL_UNET, UNetModel
from modules.sd.vae import AutoencoderKL, VAEConfig


def meta_state(module_factory, prefix: str) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        module = module_factory()
    return {prefix + k: v for k, v in module.state_dict().items()}


def full_size(family: str, unet_config) -> dict[str, torch.Tensor]:
    sd = meta_state(lambda: UNetModel(unet_config), "model.diffusion_model.")
    sd |= meta_state(lambda: AutoencoderKL(VAEConfig()), "first_stage_model.")
    if family == "sd1":
        sd |= meta_state(lambda: CLIPTextEncoder(SD1_CLIP_L), "cond_stage_model.")
    elif family == "sd2":
        sd |= meta_state(lambda: OpenCLIPTextEncoder(SD2_OPENCLIP_H), "cond_stage_model.")
    elif family == "sdxl":
        sd |= meta_state(lambda: CLIPTextEncoder(SD1_CLIP_L), "conditioner.embedders.0.")
        sd |= meta_state(lambda: OpenCLIPTextEncoder(SDXL_OPENCLIP_BIGG), "conditioner.embedders.1.")
    else:
        sd |= meta_state(lambda: OpenCLIPTextEncoder(SDXL_OPENCLIP_BIGG), "conditioner.embedders.0.")
    return sd


CASES = {
    "sd15": ("sd1", SD15_UNET),
    "sd15_inpaint": ("sd1", replace(SD15_UNET, in_channels=9)),
    "sd2": ("sd2", SD2_UNET),
    "sdxl": ("sdxl", SDXL_UNET),
    "sdxl_refiner": ("sdxl_refiner", SDXL_REFINER_UNET),
}


@pytest.mark.parametrize("case", list(CASES))
def test_full_size_families_are_detected_with_every_size(case: str):
    family, unet = CASES[case]
    config = detection.detect(full_size(family, unet))
    assert config.family == family
    assert config.unet == unet
    assert config.vae == replace(VAEConfig(), scale_factor=0.13025 if family.startswith("sdxl") else 0.18215)
    assert config.is_inpainting == (unet.in_channels == 9)
    names = [spec.name for spec in config.text_encoders]
    expected = {"sd1": ["clip_l"], "sd2": ["open_clip_h"], "sdxl": ["clip_l", "open_clip_g"],
                "sdxl_refiner": ["open_clip_g"]}[family]
    assert names == expected
    configs = [spec.config for spec in config.text_encoders]
    expected_configs = {"sd1": [SD1_CLIP_L], "sd2": [SD2_OPENCLIP_H], "sdxl": [SD1_CLIP_L, SDXL_OPENCLIP_BIGG],
                        "sdxl_refiner": [SDXL_OPENCLIP_BIGG]}[family]
    assert configs == expected_configs
    assert config.prediction_type == "epsilon"
    assert config.prediction_type_certain == (family != "sd2" or unet.in_channels == 9)


def test_sd15_unet_has_the_real_tensor_count():
    sd = full_size("sd1", SD15_UNET)
    assert sum(k.startswith("model.diffusion_model.") for k in sd) == 686
    assert sum(k.startswith("first_stage_model.") for k in sd) == 248


def test_legacy_keys_and_ema_are_normalised():
    sd = full_size("sd1", SD15_UNET)
    legacy = {}
    for key, value in sd.items():
        legacy[key.replace("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer.")] = value
    legacy["model_ema.decay"] = torch.tensor(0.999)
    legacy["model_ema.diffusion_modelinput_blocks00weight"] = torch.zeros(1)
    fixed = detection.normalize_keys(legacy)
    assert "model_ema.decay" not in fixed
    assert set(fixed) == set(sd)
    assert detection.detect(fixed).family == "sd1"


def test_sgm_format_sd21_turbo_is_read_as_sd2():
    sd = full_size("sd2", SD2_UNET)
    sgm = {k.replace("cond_stage_model.", "conditioner.embedders.0."): v for k, v in sd.items()}
    config = detection.detect(detection.normalize_keys(sgm))
    assert config.family == "sd2" and config.text_encoders[0].prefix == "cond_stage_model."


def test_v_pred_key_marks_v_prediction():
    sd = full_size("sdxl", SDXL_UNET) | {"v_pred": torch.tensor([])}
    config = detection.detect(sd)
    assert config.prediction_type == "v_prediction" and config.prediction_type_certain


def test_files_that_are_not_checkpoints_are_explained():
    vae_only = meta_state(lambda: AutoencoderKL(VAEConfig()), "first_stage_model.")
    with pytest.raises(BadCheckpoint, match="No UNet weights"):
        detection.detect(vae_only)
    with pytest.raises(BadCheckpoint, match="diffusers-format"):
        detection.detect({"down_blocks.0.resnets.0.conv1.weight": torch.zeros(1)})
    unet_only = meta_state(lambda: UNetModel(SD15_UNET), "model.diffusion_model.")
    with pytest.raises(BadCheckpoint, match="text encoder"):
        detection.detect(unet_only | meta_state(lambda: AutoencoderKL(VAEConfig()), "first_stage_model."))
    with pytest.raises(BadCheckpoint, match="VAE"):
        detection.detect(unet_only | meta_state(lambda: CLIPTextEncoder(SD1_CLIP_L), "cond_stage_model."))
    with pytest.raises(BadCheckpoint, match="SD3"):
        detection.detect({"model.diffusion_model.x_embedder.proj.weight": torch.zeros(1)})


def test_yaml_and_json_overrides(tmp_path: Path):
    config = detection.detect(full_size("sd2", SD2_UNET))
    ckpt = tmp_path / "model.safetensors"
    assert detection.apply_override_file(config, ckpt) == config
    (tmp_path / "model.yaml").write_text(
        'model:\n  params:\n    parameterization: "v"\n    scale_factor: 0.2\n'
        "    unet_config:\n      params:\n        num_head_channels: 32\n")
    overridden = detection.apply_override_file(config, ckpt)
    assert overridden.prediction_type == "v_prediction" and overridden.prediction_type_certain
    assert overridden.vae.scale_factor == 0.2 and overridden.unet.num_head_channels == 32
    (tmp_path / "model.yaml").unlink()
    (tmp_path / "model.json").write_text('{"prediction_type": "v_prediction"}')
    assert detection.apply_override_file(config, ckpt).prediction_type == "v_prediction"
    (tmp_path / "model.json").write_text('{"prediction_type": "x0"}')
    with pytest.raises(BadCheckpoint, match="x0"):
        detection.apply_override_file(config, ckpt)
    (tmp_path / "model.json").write_text("{oops")
    with pytest.raises(BadCheckpoint, match="model.json"):
        detection.apply_override_file(config, ckpt)
