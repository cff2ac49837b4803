"""Tests for modules/sd/loader.py: end-to-end loading from files, dtypes, legacy layouts and damaged files.

Numerical equivalence of the loaded parts against diffusers lives in test_loader_equivalence.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from modules.errors import BadCheckpoint
from modules.sd import loader
from modules.sd.unet import UNetConfig
from tests.sd.factory import TINY_UNETS, tiny_state_dict, write_tiny_checkpoint


def all_tensors(model: loader.StableDiffusionModel):
    modules = [model.unet, model.vae, *model.text_encoders.values()]
    return [t for m in modules for t in [*m.parameters(), *m.buffers()]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_loads_in_the_target_dtype_with_no_meta_tensors(tmp_path: Path, dtype):
    path = write_tiny_checkpoint("sd1", tmp_path, dtype=torch.float16)
    model = loader.load_model(path, dtype=dtype, vae_dtype=torch.float32)
    assert model.family == "sd1" and model.path == path
    assert model.unet.config == TINY_UNETS["sd1"]
    assert all(not t.is_meta for t in all_tensors(model))
    assert next(model.unet.parameters()).dtype == dtype
    assert next(model.text_encoders["clip_l"].parameters()).dtype == dtype
    assert next(model.vae.parameters()).dtype == torch.float32
    assert not model.unet.training and not any(p.requires_grad for p in model.unet.parameters())
    reference = tiny_state_dict("sd1")["model.diffusion_model.out.2.weight"].half().to(dtype)
    assert torch.equal(model.unet.state_dict()["out.2.weight"], reference)


def test_ckpt_and_safetensors_give_the_same_model(tmp_path: Path):
    sd = tiny_state_dict("sd1", seed=3)
    save_file(sd, str(tmp_path / "a.safetensors"))
    torch.save({"state_dict": sd, "global_step": 1}, tmp_path / "a.ckpt")
    a = loader.load_model(tmp_path / "a.safetensors")
    b = loader.load_model(tmp_path / "a.ckpt")
    for x, y in zip(a.unet.state_dict().values(), b.unet.state_dict().values(), strict=True):
        assert torch.equal(x, y)


def test_legacy_sd1_layout_loads(tmp_path: Path):
    """Old SD1 files: text encoder without `text_model.`, a `position_ids` buffer, EMA copies beside the weights."""
    sd = tiny_state_dict("sd1")
    legacy = {k.replace("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."): v
              for k, v in sd.items()}
    legacy["cond_stage_model.transformer.embeddings.position_ids"] = torch.arange(77)[None]
    legacy["model_ema.decay"] = torch.tensor(0.9999)
    legacy["model_ema.num_updates"] = torch.tensor(10, dtype=torch.int32)
    save_file(legacy, str(tmp_path / "old.safetensors"))
    model = loader.load_model(tmp_path / "old.safetensors")
    weight = model.text_encoders["clip_l"].state_dict()["transformer.text_model.final_layer_norm.weight"]
    assert torch.equal(weight, sd["cond_stage_model.transformer.text_model.final_layer_norm.weight"])


def test_vae_with_linear_attention_weights_loads(tmp_path: Path):
    sd = tiny_state_dict("sd1")
    key = "first_stage_model.decoder.mid.attn_1.q.weight"
    original = sd[key].clone()
    sd[key] = sd[key][:, :, 0, 0].contiguous()
    save_file(sd, str(tmp_path / "lin.safetensors"))
    model = loader.load_model(tmp_path / "lin.safetensors")
    assert torch.equal(model.vae.state_dict()["decoder.mid.attn_1.q.weight"], original)


def test_missing_weights_are_reported_naming_the_file(tmp_path: Path):
    sd = tiny_state_dict("sd1")
    del sd["model.diffusion_model.input_blocks.1.0.emb_layers.1.bias"]
    save_file(sd, str(tmp_path / "broken.safetensors"))
    with pytest.raises(BadCheckpoint) as e:
        loader.load_model(tmp_path / "broken.safetensors")
    assert "broken.safetensors" in e.value.message and "missing" in e.value.message


def test_truncated_file_is_reported_naming_the_file(tmp_path: Path):
    path = write_tiny_checkpoint("sd1", tmp_path, name="cut")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(BadCheckpoint, match="cut.safetensors"):
        loader.load_model(path)


def test_unsafe_ckpt_is_refused_by_the_loader(tmp_path: Path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must not run",))

    torch.save({"state_dict": tiny_state_dict("sd1"), "x": Payload()}, tmp_path / "evil.ckpt")
    with pytest.raises(BadCheckpoint, match="refused"):
        loader.load_model(tmp_path / "evil.ckpt")


class ConstantUNet(torch.nn.Module):
    def __init__(self, shift: float) -> None:
        super().__init__()
        self.config = UNetConfig(model_channels=32, channel_mult=(1,), context_dim=8)
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.shift = shift

    def forward(self, x, t, context):
        return x + self.shift


def test_prediction_probe_tells_v_from_epsilon():
    assert loader.probe_prediction_type(ConstantUNet(-2.0)) == "v_prediction"
    assert loader.probe_prediction_type(ConstantUNet(0.0)) == "epsilon"


def test_sd2_without_override_is_probed(tmp_path: Path):
    model = loader.load_model(write_tiny_checkpoint("sd2", tmp_path))
    assert model.family == "sd2" and model.prediction_type in ("epsilon", "v_prediction")
