"""Tests for modules/lora.py: finding LoRA files, A1111's argument parsing, activation with separate multipliers,
unknown names reported (not fatal), and the "Lora hashes" infotext checked against a direct sha256 computation."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from modules import lora as lora_net
from modules.errors import InvalidRequest
from modules.sd.text_encoders import CLIPTextEncoder
from modules.sd.unet import UNetModel
from tests.sd.factory import TINY_CLIP, TINY_UNETS

TO_Q = "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
TE_FC1 = "transformer.text_model.encoder.layers.0.mlp.fc1.weight"


@pytest.fixture(scope="module")
def model() -> SimpleNamespace:
    torch.manual_seed(0)
    clip = CLIPTextEncoder(replace(TINY_CLIP, vocab_size=1000)).requires_grad_(False)
    return SimpleNamespace(unet=UNetModel(TINY_UNETS["sd1"]).requires_grad_(False), text_encoders={"clip_l": clip},
                           extras={})


def write_lora(path: Path, seed: int, metadata: dict[str, str] | None = None) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    sd = {
        f"{q}.lora_up.weight": torch.randn(32, 2, generator=g),
        f"{q}.lora_down.weight": torch.randn(2, 32, generator=g),
        f"{q}.alpha": torch.tensor(1.0),
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.randn(256, 2, generator=g),
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.randn(2, 128, generator=g),
        "lora_unet_some_other_model_layer.lora_up.weight": torch.randn(4, 2, generator=g),
        "lora_unet_some_other_model_layer.lora_down.weight": torch.randn(2, 4, generator=g),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path), metadata=metadata)
    return sd


def direct_addnet_hash(path: Path) -> str:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return hashlib.sha256(data[8 + n:]).hexdigest()


def test_request_parsing_follows_a1111():
    request = lora_net.LoraRequest
    assert lora_net.LoraRequest.from_args(["a"]) == lora_net.LoraRequest("a", 1.0, 1.0, None)
    assert lora_net.LoraRequest.from_args(["a", "0.5"]) == lora_net.LoraRequest("a", 0.5, 0.5, None)
    assert lora_net.LoraRequest.from_args(["a", "0.5", "0.2", "4"]) == lora_net.LoraRequest("a", 0.5, 0.2, 4)
    assert request.from_args(["a", "unet=0.3", "te=0.7", "dyn=2"]) == request("a", 0.7, 0.3, 2)
    with pytest.raises(InvalidRequest):
        lora_net.LoraRequest.from_args(["a", "lots"])


def test_activation_merges_with_separate_multipliers_and_reports_hashes(tmp_path, model):
    folder = tmp_path / "Lora"
    sd = write_lora(folder / "styles" / "detail.safetensors", 1)
    write_lora(folder / "other.safetensors", 2, metadata={"sshs_model_hash": "ab" * 32, "ss_output_name": "Other:v1"})
    (folder / "notes.txt").write_text("not a lora")
    networks = lora_net.LoraNetworks([folder])
    to_q, fc1 = model.unet.get_parameter(TO_Q), model.text_encoders["clip_l"].get_parameter(TE_FC1)
    original_q, original_fc1 = to_q.clone(), fc1.clone()

    activation = networks.activate(model, [SimpleNamespace(items=["detail", "0.5", "0.25"]), ["missing", "1"]])

    assert sorted(networks.available) == ["detail", "other"]
    assert activation.not_found == ["missing"] and activation.comments == ["Lora not found: missing"]
    (active,) = activation.active
    assert active.report.applied == 2 and active.report.unmatched == ["lora_unet_some_other_model_layer"]
    base = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    expected_q = original_q + 0.25 * (sd[f"{base}.lora_up.weight"] @ sd[f"{base}.lora_down.weight"]) * 1.0 / 2
    torch.testing.assert_close(to_q, expected_q, atol=1e-6, rtol=0)
    te = "lora_te_text_model_encoder_layers_0_mlp_fc1"
    expected_fc1 = original_fc1 + 0.5 * (sd[f"{te}.lora_up.weight"] @ sd[f"{te}.lora_down.weight"])
    torch.testing.assert_close(fc1, expected_fc1, atol=1e-6, rtol=0)
    addnet = direct_addnet_hash(folder / "styles" / "detail.safetensors")
    assert activation.extra_generation_params == {"Lora hashes": f"detail: {addnet[:12]}"}

    # the alias from metadata finds the file; the metadata hash wins; ':' and ',' are dropped from the name
    second = networks.activate(model, [["Other:v1"], ["detail", "0.5", "0.25"]])
    assert second.hashes_infotext == f"Otherv1: {'ab' * 6}, detail: {addnet[:12]}"

    networks.activate(model, [])
    assert torch.equal(to_q, original_q) and torch.equal(fc1, original_fc1)


def test_same_request_again_does_not_remerge(tmp_path, model):
    write_lora(tmp_path / "a.safetensors", 3)
    networks = lora_net.LoraNetworks([tmp_path])
    to_q = model.unet.get_parameter(TO_Q)
    networks.activate(model, [["a", "1"]])
    version = to_q._version
    again = networks.activate(model, [["a", "1"]])
    assert to_q._version == version and again.active[0].report.applied == 2
    assert networks.restore(model) == 2


def test_bad_files_and_pickles(tmp_path, model):
    save_file({"model.diffusion_model.out.2.weight": torch.zeros(2)}, str(tmp_path / "checkpoint.safetensors"))
    sd = write_lora(tmp_path / "tmp.safetensors", 4)
    (tmp_path / "tmp.safetensors").unlink()
    torch.save(sd, tmp_path / "old.pt")
    networks = lora_net.LoraNetworks([tmp_path])
    activation = networks.activate(model, [["checkpoint"], ["old", "1"]])
    assert "not a LoRA file" in activation.failed["checkpoint"]
    assert activation.active[0].entry.shorthash == hashlib.sha256((tmp_path / "old.pt").read_bytes()).hexdigest()[:12]
    assert activation.active[0].report.applied == 2
    networks.restore(model)
