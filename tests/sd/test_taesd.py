"""Tests for modules/sd/taesd.py: the original key layout, file loading, and equivalence with diffusers.

Reference: diffusers' ``AutoencoderTiny`` (test-only dependency) with the same random weights, moved between the two
layouts by the key map below; fp32, atol 1e-5, on a 4x8x8 latent (decoder) and a 3x64x64 image (encoder).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from modules.errors import BadCheckpoint
from modules.sd import taesd

ATOL = 1e-5


def randomized(module: nn.Module, seed: int = 0) -> nn.Module:
    """Every tensor random and well scaled, so a swapped or missing weight changes the output visibly."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            fan_in = param[0].numel() if param.ndim > 1 else 64
            param.copy_(torch.randn(param.shape, generator=generator) * (1.5 / fan_in) ** 0.5)
    return module.eval()


def diffusers_key_to_original(key: str) -> tuple[str, str]:
    """``decoder.layers.N.rest`` -> ("decoder", "N+1.rest"): diffusers has no clamp layer; encoder indices agree."""
    part, index, rest = re.match(r"^(encoder|decoder)\.layers\.(\d+)\.(.*)$", key).groups()
    return part, f"{int(index) + (part == 'decoder')}.{rest}"


def diffusers_twin(seed: int = 0):
    """diffusers' AutoencoderTiny with random weights, and ours holding the same tensors."""
    diffusers = pytest.importorskip("diffusers")
    reference = randomized(diffusers.AutoencoderTiny(latent_channels=4), seed)
    ours = {"decoder": taesd.tiny_decoder(4).eval(), "encoder": taesd.tiny_encoder(4).eval()}
    converted: dict[str, dict[str, torch.Tensor]] = {"decoder": {}, "encoder": {}}
    for key, value in reference.state_dict().items():
        part, original = diffusers_key_to_original(key)
        converted[part][original] = value.clone()
    for part, module in ours.items():
        module.load_state_dict(converted[part], strict=True)
    return reference, ours["decoder"], ours["encoder"]


def test_decoder_keys_are_the_original_files_keys() -> None:
    keys = set(taesd.tiny_decoder().state_dict())
    assert {"1.weight", "1.bias", "3.conv.0.weight", "3.conv.4.bias", "7.weight", "19.weight", "19.bias"} <= keys
    assert "7.bias" not in keys and not any(".skip" in k for k in keys)  # bias-free upsample convs, identity skips
    assert sum(p.numel() for p in taesd.tiny_decoder().parameters()) == 1_222_531  # madebyollin's TAESD decoder
    encoder_keys = set(taesd.tiny_encoder().state_dict())
    assert {"0.weight", "1.conv.0.weight", "2.weight", "14.weight", "14.bias"} <= encoder_keys
    assert "2.bias" not in encoder_keys


@torch.no_grad()
def test_decoder_matches_diffusers_autoencoder_tiny() -> None:
    reference, decoder, _ = diffusers_twin()
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1)) * 2.5  # some beyond the clamp
    expected = reference.decode(latent).sample  # diffusers returns [-1, 1]
    ours = decoder(latent) * 2 - 1
    assert ours.shape == (1, 3, 64, 64)
    assert expected.std() > 0.05  # the random net is not dead
    torch.testing.assert_close(ours, expected, atol=ATOL, rtol=0)


@torch.no_grad()
def test_encoder_matches_diffusers_autoencoder_tiny() -> None:
    reference, _, encoder = diffusers_twin(seed=2)
    image01 = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    expected = reference.encode(image01 * 2 - 1).latents  # diffusers takes [-1, 1]
    ours = encoder(image01)
    assert ours.shape == (1, 4, 8, 8) and expected.std() > 0.01
    torch.testing.assert_close(ours, expected, atol=ATOL, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_load_original_single_file_weights(tmp_path: Path, suffix: str) -> None:
    source = randomized(taesd.tiny_decoder(), seed=4)
    weights = {k: v.contiguous() for k, v in source.state_dict().items()}
    path = tmp_path / f"taesd_decoder{suffix}"
    torch.save(weights, path) if suffix == ".pth" else save_file(weights, str(path))
    loaded = taesd.load_tiny_decoder(path)
    latent = torch.randn(1, 4, 4, 4)
    torch.testing.assert_close(loaded(latent), source(latent), atol=0, rtol=0)
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training


@torch.no_grad()
def test_load_diffusers_layout_and_16_channel_latents(tmp_path: Path) -> None:
    source = randomized(taesd.tiny_decoder(16), seed=5)  # taesd3 / taef1 decoders take 16 channels
    weights = {f"decoder.layers.{int(k.split('.', 1)[0]) - 1}.{k.split('.', 1)[1]}": v
               for k, v in source.state_dict().items()}
    weights["encoder.layers.0.weight"] = torch.zeros(64, 3, 3, 3)  # a whole AutoencoderTiny file: encoder ignored
    save_file(weights, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    loaded = taesd.load_tiny_decoder(tmp_path / "diffusion_pytorch_model.safetensors")
    latent = torch.randn(1, 16, 4, 4)
    torch.testing.assert_close(loaded(latent), source(latent), atol=0, rtol=0)


def test_wrong_files_are_named_in_a_clear_error(tmp_path: Path) -> None:
    other = tmp_path / "model.safetensors"
    save_file({"first_stage_model.decoder.conv_in.weight": torch.zeros(1)}, str(other))
    with pytest.raises(BadCheckpoint, match="model.safetensors is not a TAESD decoder"):
        taesd.load_tiny_decoder(other)
    partial = tmp_path / "taesd_decoder.safetensors"
    weights = taesd.tiny_decoder().state_dict()
    del weights["19.bias"]
    save_file(weights, str(partial))
    with pytest.raises(BadCheckpoint, match="does not match the TAESD decoder layout"):
        taesd.load_tiny_decoder(partial)
    with pytest.raises(BadCheckpoint, match="does not exist"):
        taesd.load_tiny_decoder(tmp_path / "missing.pth")
