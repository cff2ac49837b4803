"""Tests for modules/sd/lora.py: key mapping (SD1 diffusers names, SDXL LDM names, packed OpenCLIP q/k/v), merge maths
against hand-computed W + m·(up·down)·alpha/rank, bit-exact restore, and clear errors for files that are not LoRAs.

Models are tiny (tests/sd/factory.py configs) and built without a checkpoint file; only `.unet`, `.text_encoders` and
`.extras` are used by the code under test.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from modules.sd import lora
from modules.sd.text_encoders import CLIPTextEncoder, OpenCLIPTextEncoder
from modules.sd.unet import UNetModel
from tests.sd.factory import TINY_CLIP, TINY_OPEN_CLIP, TINY_UNETS

ATOL = 1e-6
CLIP = replace(TINY_CLIP, vocab_size=1000)  # a small vocabulary keeps snapshots cheap; the layers are what matter
OPEN_CLIP = replace(TINY_OPEN_CLIP, vocab_size=1000)


def tiny_model(kind: str) -> SimpleNamespace:
    torch.manual_seed(0)
    if kind == "sdxl":
        encoders = {"clip_l": CLIPTextEncoder(CLIP), "open_clip_g": OpenCLIPTextEncoder(OPEN_CLIP)}
    else:
        encoders = {"clip_l": CLIPTextEncoder(CLIP)}
    model = SimpleNamespace(unet=UNetModel(TINY_UNETS[kind]), text_encoders=encoders, extras={})
    for module in [model.unet, *encoders.values()]:
        module.requires_grad_(False)
    return model


@pytest.fixture(scope="module")
def sd1() -> SimpleNamespace:
    return tiny_model("sd1")


@pytest.fixture(scope="module")
def sdxl() -> SimpleNamespace:
    return tiny_model("sdxl")


def snapshot(model: SimpleNamespace) -> dict[str, torch.Tensor]:
    parts = {"unet": model.unet, **model.text_encoders}
    return {f"{n}.{k}": v.clone() for n, m in parts.items() for k, v in m.state_dict().items()}


def param(model: SimpleNamespace, component: str, name: str) -> torch.Tensor:
    module = model.unet if component == "unet" else model.text_encoders[component]
    return module.get_parameter(name)


def add_layer(sd: dict, base: str, up: torch.Tensor, down: torch.Tensor, alpha: float | None,
              mid: torch.Tensor | None = None) -> None:
    sd[f"{base}.lora_up.weight"] = up
    sd[f"{base}.lora_down.weight"] = down
    if alpha is not None:
        sd[f"{base}.alpha"] = torch.tensor(alpha)
    if mid is not None:
        sd[f"{base}.lora_mid.weight"] = mid


def rand(*shape: int) -> torch.Tensor:
    return torch.randn(*shape) * 0.1


def test_diffusers_block_names_follow_the_config():
    names = lora.diffusers_block_names(TINY_UNETS["sd1"])  # levels (1, 2), 1 res block, attention on level 0 only
    assert names["input_blocks.1.1"] == "down_blocks.0.attentions.0"
    assert names["input_blocks.2.0.op"] == "down_blocks.0.downsamplers.0.conv"
    assert names["output_blocks.1.1.conv"] == "up_blocks.0.upsamplers.0.conv"  # no attention on level 1
    assert names["output_blocks.3.1"] == "up_blocks.1.attentions.1"
    sd15 = lora.diffusers_block_names(lora.UNetConfig())
    assert sd15["input_blocks.4.1"] == "down_blocks.1.attentions.0"  # kohya's 1 + 3·i + j
    assert sd15["output_blocks.5.2.conv"] == "up_blocks.1.upsamplers.0.conv"
    assert sd15["output_blocks.2.1.conv"] == "up_blocks.0.upsamplers.0.conv"
    assert lora.diffusers_module_name("input_blocks.1.0.in_layers.2", names) == "down_blocks.0.resnets.0.conv1"


def test_sd1_merge_matches_hand_computation_and_restores_bit_exactly(sd1):
    before = snapshot(sd1)
    sd: dict[str, torch.Tensor] = {}
    q_up, q_down = rand(32, 4), rand(4, 32)
    add_layer(sd, "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", q_up, q_down, 2.0)
    pin_up, pin_down = rand(32, 4, 1, 1), rand(4, 32, 1, 1)  # SD1 proj_in is a 1x1 conv
    add_layer(sd, "lora_unet_up_blocks_1_attentions_1_proj_in", pin_up, pin_down, None)
    conv_up, conv_down = rand(32, 2, 1, 1), rand(2, 32, 3, 3)  # LoCon: 3x3 down, 1x1 up
    add_layer(sd, "lora_unet_down_blocks_0_resnets_0_conv1", conv_up, conv_down, 1.0)
    te_up, te_down = rand(128, 8), rand(8, 128)
    add_layer(sd, "lora_te_text_model_encoder_layers_1_self_attn_q_proj", te_up, te_down, 4.0)
    add_layer(sd, "lora_unet_not_a_layer", rand(4, 2), rand(2, 4), 1.0)
    network = lora.parse_lora_state_dict(sd)

    (report,) = lora.merge_loras(sd1, [lora.LoraApplication(network, te_multiplier=0.5, unet_multiplier=0.8)])
    assert report.applied == 4 and report.unmatched == ["lora_unet_not_a_layer"]

    def check(component: str, name: str, expected_delta: torch.Tensor) -> None:
        original = before[f"{component}.{name}"]
        torch.testing.assert_close(param(sd1, component, name), original + expected_delta, atol=ATOL, rtol=0)

    check("unet", "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight", 0.8 * (q_up @ q_down) * 2.0 / 4)
    check("unet", "output_blocks.3.1.proj_in.weight",
          0.8 * (pin_up.flatten(1) @ pin_down.flatten(1)).reshape(32, 32, 1, 1))
    composed = torch.einsum("or,rikl->oikl", conv_up.flatten(1), conv_down)
    check("unet", "input_blocks.1.0.in_layers.2.weight", 0.8 * composed * 1.0 / 2)
    check("clip_l", "transformer.text_model.encoder.layers.1.self_attn.q_proj.weight",
          0.5 * (te_up @ te_down) * 4.0 / 8)

    # the LoCon delta really is conv(1x1 up) ∘ conv(3x3 down)
    x = torch.randn(1, 32, 6, 6)
    two_step = torch.nn.functional.conv2d(torch.nn.functional.conv2d(x, conv_down, padding=1), conv_up)
    torch.testing.assert_close(torch.nn.functional.conv2d(x, composed, padding=1), two_step, atol=1e-5, rtol=1e-5)

    assert lora.restore_weights(sd1) == 4
    after = snapshot(sd1)
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_sdxl_ldm_names_packed_open_clip_and_cp_locon(sdxl):
    before = snapshot(sdxl)
    sd: dict[str, torch.Tensor] = {}
    k_up, k_down = rand(128, 4), rand(4, 256)  # attn2.to_k reads the 256-wide context
    add_layer(sd, "lora_unet_input_blocks_3_1_transformer_blocks_1_attn2_to_k", k_up, k_down, 1.0)
    ff_up, ff_down = rand(1024, 4), rand(4, 128)
    add_layer(sd, "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_ff_net_0_proj", ff_up, ff_down, 8.0)
    qkv = {p: (rand(128, 4), rand(4, 128)) for p in ("q", "v")}  # no k: its rows must stay untouched
    for p, (up, down) in qkv.items():
        add_layer(sd, f"lora_te2_text_model_encoder_layers_1_self_attn_{p}_proj", up, down, 2.0)
    fc_up, fc_down = rand(512, 4), rand(4, 128)
    add_layer(sd, "lora_te2_text_model_encoder_layers_0_mlp_fc1", fc_up, fc_down, None)
    out_up, out_down = rand(128, 4), rand(4, 128)
    add_layer(sd, "lora_te2_text_model_encoder_layers_2_self_attn_out_proj", out_up, out_down, 4.0)
    l_up, l_down = rand(128, 4), rand(4, 256)
    add_layer(sd, "lora_te1_text_model_encoder_layers_0_mlp_fc2", l_up, l_down, 4.0)
    cp_up, cp_mid, cp_down = rand(64, 2, 1, 1), rand(2, 2, 3, 3), rand(2, 64, 1, 1)  # LyCORIS CP-decomposed conv
    add_layer(sd, "lora_unet_input_blocks_1_0_out_layers_3", cp_up, cp_down, 2.0, mid=cp_mid)
    network = lora.parse_lora_state_dict(sd)

    (report,) = lora.merge_loras(sdxl, [lora.LoraApplication(network, te_multiplier=1.5, unet_multiplier=-0.5)])
    assert report.applied == 8 and report.skipped == 0

    def check(component: str, name: str, expected: torch.Tensor) -> None:
        torch.testing.assert_close(param(sdxl, component, name), expected, atol=ATOL, rtol=0)

    def orig(component: str, name: str) -> torch.Tensor:
        return before[f"{component}.{name}"]

    name = "input_blocks.3.1.transformer_blocks.1.attn2.to_k.weight"
    check("unet", name, orig("unet", name) - 0.5 * (k_up @ k_down) * 1.0 / 4)
    name = "input_blocks.3.1.transformer_blocks.0.ff.net.0.proj.weight"
    check("unet", name, orig("unet", name) - 0.5 * (ff_up @ ff_down) * 8.0 / 4)
    packed = "model.transformer.resblocks.1.attn.in_proj_weight"
    expected = orig("open_clip_g", packed).clone()
    expected[0:128] += 1.5 * (qkv["q"][0] @ qkv["q"][1]) * 2.0 / 4
    expected[256:384] += 1.5 * (qkv["v"][0] @ qkv["v"][1]) * 2.0 / 4
    check("open_clip_g", packed, expected)
    assert torch.equal(param(sdxl, "open_clip_g", packed)[128:256], orig("open_clip_g", packed)[128:256])
    name = "model.transformer.resblocks.0.mlp.c_fc.weight"
    check("open_clip_g", name, orig("open_clip_g", name) + 1.5 * (fc_up @ fc_down))
    name = "model.transformer.resblocks.2.attn.out_proj.weight"
    check("open_clip_g", name, orig("open_clip_g", name) + 1.5 * (out_up @ out_down) * 4.0 / 4)
    name = "transformer.text_model.encoder.layers.0.mlp.fc2.weight"
    check("clip_l", name, orig("clip_l", name) + 1.5 * (l_up @ l_down) * 4.0 / 4)
    name = "input_blocks.1.0.out_layers.3.weight"
    cp = torch.einsum("nmkl,in,mj->ijkl", cp_mid, cp_up.flatten(1), cp_down.flatten(1))
    check("unet", name, orig("unet", name) - 0.5 * cp * 2.0 / 2)

    lora.restore_weights(sdxl)
    after = snapshot(sdxl)
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_reapplying_replaces_the_previous_merge_and_networks_add(sd1):
    before = snapshot(sd1)
    name = "input_blocks.1.1.transformer_blocks.0.attn2.to_v.weight"
    base = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_v"
    a, b = {}, {}
    add_layer(a, base, rand(32, 2), rand(2, 128), 2.0)
    add_layer(b, base, rand(32, 3), rand(3, 128), None)
    net_a, net_b = lora.parse_lora_state_dict(a), lora.parse_lora_state_dict(b)
    lora.merge_loras(sd1, [lora.LoraApplication(net_a, unet_multiplier=1.0)])
    lora.merge_loras(sd1, [lora.LoraApplication(net_a, unet_multiplier=0.25), lora.LoraApplication(net_b)])
    expected = before[f"unet.{name}"] + 0.25 * net_a.layers[base].delta() + net_b.layers[base].delta()
    torch.testing.assert_close(param(sd1, "unet", name), expected, atol=ATOL, rtol=0)
    lora.merge_loras(sd1, [])
    assert torch.equal(param(sd1, "unet", name), before[f"unet.{name}"])


def test_dyn_dim_and_wrong_shapes_are_reported(sd1):
    sd: dict[str, torch.Tensor] = {}
    up, down = rand(32, 4), rand(4, 32)
    add_layer(sd, "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k", up, down, 4.0)
    add_layer(sd, "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_v", rand(64, 4), rand(4, 64), 1.0)
    network = lora.parse_lora_state_dict(sd)
    name = "input_blocks.1.1.transformer_blocks.0.attn1.to_k.weight"
    original = param(sd1, "unet", name).clone()
    (report,) = lora.merge_loras(sd1, [lora.LoraApplication(network, dyn_dim=2)])
    assert report.applied == 1 and len(report.mismatched) == 1 and "attn1_to_v" in report.mismatched[0]
    torch.testing.assert_close(param(sd1, "unet", name), original + up[:, :2] @ down[:2], atol=ATOL, rtol=0)
    lora.restore_weights(sd1)
    assert torch.equal(param(sd1, "unet", name), original)


def test_diffusers_peft_keys_are_renamed():
    assert lora.split_lora_key("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.lora_A.weight") \
        == ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0", "down")
    assert lora.split_lora_key("text_encoder_2.text_model.encoder.layers.3.mlp.fc1.lora.up.weight") \
        == ("lora_te2_text_model_encoder_layers_3_mlp_fc1", "up")
    assert lora.split_lora_key(
        "unet.mid_block.attentions.0.transformer_blocks.0.attn2.processor.to_out_lora.down.weight"
    ) == ("lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_out_0", "down")
    assert lora.split_lora_key("model.diffusion_model.out.2.weight") is None


def test_files_that_are_not_loras_give_clear_errors(tmp_path):
    with pytest.raises(lora.BadLoraFile, match="not a LoRA file"):
        lora.parse_lora_state_dict({"model.diffusion_model.out.2.weight": torch.zeros(1)}, "model.safetensors")
    with pytest.raises(lora.BadLoraFile, match="LoHa"):
        lora.parse_lora_state_dict({"lora_unet_x.hada_w1_a": torch.zeros(1), "lora_unet_x.hada_w1_b": torch.zeros(1)})
    mixed = {"lora_unet_x.lora_up.weight": rand(4, 2), "lora_unet_x.lora_down.weight": rand(2, 4),
             "lora_unet_y.dora_scale": torch.ones(4), "lora_unet_y.lora_up.weight": rand(4, 2),
             "lora_unet_y.lora_down.weight": rand(2, 4), "bundle_emb.foo.string_to_param.*": rand(1, 8)}
    network = lora.parse_lora_state_dict(mixed)
    assert list(network.layers) == ["lora_unet_x"] and network.unsupported == {"lora_unet_y": "DoRA"}
    path = tmp_path / "ckpt.safetensors"
    save_file({"first_stage_model.decoder.conv_in.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(lora.BadLoraFile, match="ckpt.safetensors is not a LoRA file"):
        lora.load_lora_file(path)


def test_load_lora_file_reads_metadata_and_addnet_hash(tmp_path):
    import hashlib
    import struct

    sd = {"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": rand(256, 2),
          "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": rand(2, 128)}
    path = tmp_path / "style.safetensors"
    save_file(sd, str(path), metadata={"ss_output_name": "style_v1"})
    network = lora.load_lora_file(path)
    assert network.metadata == {"ss_output_name": "style_v1"} and len(network.layers) == 1
    data = path.read_bytes()
    (header_length,) = struct.unpack("<Q", data[:8])
    assert lora.addnet_hash(path) == hashlib.sha256(data[8 + header_length:]).hexdigest()


@torch.no_grad()
def test_merged_weights_reach_the_forward_pass(sd1):
    """Self-attention fuses q/k/v into a cached matrix; a merge and a restore must both invalidate that cache."""
    x, t, context = torch.randn(1, 4, 8, 8), torch.tensor([500.0]), torch.randn(1, 77, 128)
    original = sd1.unet(x, t, context)
    sd: dict[str, torch.Tensor] = {}
    add_layer(sd, "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k", rand(32, 4), rand(4, 32), 4.0)
    lora.merge_loras(sd1, [lora.LoraApplication(lora.parse_lora_state_dict(sd), unet_multiplier=5.0)])
    assert not torch.allclose(sd1.unet(x, t, context), original)
    lora.restore_weights(sd1)
    assert torch.equal(sd1.unet(x, t, context), original)
