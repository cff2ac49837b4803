"""Tests for modules/sd/offload.py: medvram/lowvram shuttling puts each part on the compute device exactly when it
runs and keeps at most one part there. The CUDA move itself is `module.to(device)`; here a recording shuttle stands
in for the devices (this machine has no GPU), and a real CPU-to-CPU run checks results are unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from modules.sd import offload
from modules.sd.loader import load_model
from tests.sd.factory import write_tiny_checkpoint


class RecordingShuttle(offload.ModuleShuttle):
    """Records where each part would be instead of moving it (the CUDA device is only a name here)."""

    def __init__(self) -> None:
        super().__init__("cuda:0", "cpu")
        self.where: dict[int, str] = {}

    def _move(self, module, device) -> None:
        self.where[id(module)] = device.type


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder: Path = tmp_path_factory.mktemp("offload")
    return load_model(write_tiny_checkpoint("sd1", folder))


def run_all(model) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    tokens = torch.tensor([[49406, 320, 1125, 49407] + [49407] * 73])
    with torch.inference_mode():
        context = model.text_encoders["clip_l"](tokens).hidden
        eps = model.unet(torch.randn(1, 4, 8, 8, generator=g), torch.tensor([500.0]), context)
        image = model.vae.decode_latent(eps)
        latent = model.vae.encode_to_latent(image, sample=False)
    return eps, image, latent


@pytest.mark.parametrize("lowvram", [False, True])
def test_each_part_is_on_the_compute_device_when_it_runs_and_alone(model, lowvram: bool):
    shuttle = RecordingShuttle()
    parts = offload.medvram_parts(model)
    if lowvram:
        parts = [*offload.lowvram_unet_parts(model.unet), *parts[1:]]
    shuttle.register(parts)
    seen = []

    def check(module, args):
        assert shuttle.where[id(module)] == "cuda"
        assert sum(place == "cuda" for place in shuttle.where.values()) == 1
        seen.append(module)

    handles = [part.register_forward_pre_hook(check) for part in parts]
    try:
        run_all(model)
    finally:
        for handle in handles:
            handle.remove()
        shuttle.remove()
    assert {id(m) for m in seen} == {id(m) for m in parts}
    if lowvram:
        assert len(parts) == 2 + len(model.unet.input_blocks) + len(model.unet.output_blocks) + 6


@pytest.mark.parametrize("lowvram", [False, True])
def test_results_are_unchanged_by_offloading(model, lowvram: bool):
    reference = run_all(model)
    shuttle = offload.setup_offload(model, "cpu", lowvram=lowvram)
    try:
        shuttled = run_all(model)
    finally:
        shuttle.remove()
    for a, b in zip(reference, shuttled, strict=True):
        assert torch.equal(a, b)


def test_flags_choose_the_mode():
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    flags = {"medvram": False, "medvram_sdxl": False, "lowvram": False}
    assert offload.offload_mode(**flags, device=cuda, is_sdxl=False) is None
    assert offload.offload_mode(**{**flags, "lowvram": True, "medvram": True}, device=cuda, is_sdxl=False) == "lowvram"
    assert offload.offload_mode(**{**flags, "medvram": True}, device=cuda, is_sdxl=False) == "medvram"
    assert offload.offload_mode(**{**flags, "medvram_sdxl": True}, device=cuda, is_sdxl=False) is None
    assert offload.offload_mode(**{**flags, "medvram_sdxl": True}, device=cuda, is_sdxl=True) == "medvram"
    assert offload.offload_mode(**{**flags, "lowvram": True}, device=cpu, is_sdxl=True) is None
