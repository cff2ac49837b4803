"""End-to-end loader equivalence with diffusers' own single-file conversion, one tiny checkpoint per family.

For each family (SD1, SD1-inpaint, SD2-v, SDXL) `tests/sd/factory.py` writes a tiny random-weight checkpoint in the
original single-file layout, which is then loaded twice:

* ours: `modules.sd.loader.load_model(path)` (detection, meta-device build, weight assignment), fp32;
* reference: `safetensors.torch.load_file(path)` converted by `diffusers.loaders.single_file_utils`
  (`create_unet_diffusers_config_from_ldm` / `create_vae_diffusers_config_from_ldm` fed an LDM-style original config
  describing the tiny model, `convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint`, `convert_ldm_clip_checkpoint`,
  `convert_open_clip_checkpoint`) into diffusers `UNet2DConditionModel` / `AutoencoderKL` and transformers
  `CLIPTextModel` / `CLIPTextModelWithProjection`, loaded the way diffusers' `create_diffusers_clip_model_from_ldm`
  loads them.

Compared in fp32, each with max |ours - reference| <= 1e-4 * max |reference|: the text-encoder outputs each family's
pipeline uses, the UNet output (and the change its middle block makes) on the same x / t / context (SDXL: our ADM
vector vs diffusers' text_embeds + time_ids), VAE decode, and VAE encode (posterior mean / mode and log-variance).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers
import yaml
from diffusers import AutoencoderKL as DiffusersAutoencoderKL
from diffusers import UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
    create_unet_diffusers_config_from_ldm,
    create_vae_diffusers_config_from_ldm,
)
from safetensors.torch import load_file
from torch import Tensor

from modules.sd.loader import StableDiffusionModel, load_model
from modules.sd.unet import sdxl_adm_vector
from tests.sd import factory

TOLERANCE = 1e-4  # relative to max |reference|
START_OF_TEXT, END_OF_TEXT = 49406, 49407
SDXL_TIME_EMBED_DIM = 256  # per size value, as in the real SDXL
LATENT_SIZE = 16  # the tiny VAE downsamples by 2: 32x32 images


def assert_close(what: str, actual: Tensor, expected: Tensor) -> None:
    """max |actual - expected| <= 1e-4 * max |expected|, on a non-degenerate reference."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    scale = expected.abs().max().item()
    assert scale > 1e-3, f"{what}: degenerate reference output (max |x| = {scale:.3g})"
    error = (actual.float() - expected.float()).abs().max().item()
    assert error <= TOLERANCE * scale, f"{what}: max abs error {error:.3g} > {TOLERANCE} * {scale:.3g}"


def prompt_tokens(pad_id: int) -> Tensor:
    """Two 77-token prompts of different lengths: [49406, ids..., 49407, pad...] as the tokenizers build them."""
    generator = torch.Generator().manual_seed(7)
    tokens = torch.full((2, 77), pad_id, dtype=torch.long)
    for row, words in enumerate((4, 19)):
        tokens[row, 0] = START_OF_TEXT
        tokens[row, 1 : words + 1] = torch.randint(1, START_OF_TEXT, (words,), generator=generator)
        tokens[row, words + 1] = END_OF_TEXT
    return tokens


# --- the LDM / SGM original config describing each tiny model ---------------------------------------------------


def ldm_original_config(kind: str) -> dict:
    """The original (ldm / sgm yaml) config of factory's tiny `kind`, as the released configs spell it."""
    unet = factory.TINY_UNETS[kind]
    vae = factory.TINY_VAE_XL if kind == "sdxl" else factory.TINY_VAE
    sdxl = kind == "sdxl"
    unet_params: dict = {
        "in_channels": unet.in_channels,
        "out_channels": unet.out_channels,
        "model_channels": unet.model_channels,
        "attention_resolutions": [2**level for level, depth in enumerate(unet.transformer_depth) if depth],
        "num_res_blocks": unet.num_res_blocks,
        "channel_mult": list(unet.channel_mult),
        # ldm (SD1/SD2): one depth wherever there is attention; sgm (SDXL): a list plus the middle depth
        "transformer_depth": list(unet.transformer_depth) if sdxl else max(unet.transformer_depth),
        "context_dim": unet.context_dim,
        "use_linear_in_transformer": unet.use_linear_in_transformer,
    }
    if unet.num_head_channels == -1:
        unet_params["num_heads"] = unet.num_heads
    else:
        unet_params["num_head_channels"] = unet.num_head_channels
    if sdxl:
        unet_params |= {
            "transformer_depth_middle": unet.transformer_depth_middle,
            "num_classes": "sequential",
            "adm_in_channels": unet.adm_in_channels,
        }
    ddconfig = {
        "double_z": True,
        "z_channels": vae.z_channels,
        "resolution": 256,
        "in_channels": vae.in_channels,
        "out_ch": vae.out_channels,
        "ch": vae.ch,
        "ch_mult": list(vae.ch_mult),
        "num_res_blocks": vae.num_res_blocks,
        "attn_resolutions": [],
        "dropout": 0.0,
    }
    params: dict = {
        "scale_factor": vae.scale_factor,
        "network_config" if sdxl else "unet_config": {"params": unet_params},
        "first_stage_config": {"params": {"embed_dim": vae.embed_dim, "ddconfig": ddconfig}},
    }
    if kind == "sd2":
        params["parameterization"] = "v"
    target = "sgm.models.diffusion.DiffusionEngine" if sdxl else "ldm.models.diffusion.ddpm.LatentDiffusion"
    return {"model": {"target": target, "params": params}}


# --- diffusers / transformers references from the same file -----------------------------------------------------


def reference_unet(original: dict, checkpoint: dict[str, Tensor]) -> UNet2DConditionModel:
    config = create_unet_diffusers_config_from_ldm(original, checkpoint)
    unet_params = original["model"]["params"].get("network_config", {}).get("params", {})
    if "adm_in_channels" in unet_params:
        # The helper recognises SDXL's "text_time" conditioning only by context_dim 2048 / 1280; the tiny model's
        # context is narrower, so name it explicitly (the converter then maps label_emb to add_embedding).
        config |= {
            "class_embed_type": None,
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": SDXL_TIME_EMBED_DIM,
        }
    model = UNet2DConditionModel(**config)
    model.load_state_dict(convert_ldm_unet_checkpoint(checkpoint, config), strict=True)
    return model.eval()


def reference_vae(original: dict, checkpoint: dict[str, Tensor]) -> DiffusersAutoencoderKL:
    config = create_vae_diffusers_config_from_ldm(original, checkpoint)
    model = DiffusersAutoencoderKL(**config)
    model.load_state_dict(convert_ldm_vae_checkpoint(checkpoint, config), strict=True)
    return model.eval()


def _load_text_model(model: transformers.PreTrainedModel, state: dict[str, Tensor]) -> transformers.PreTrainedModel:
    """Load a converted text encoder like diffusers' create_diffusers_clip_model_from_ldm: transformers 5 dropped the
    ``text_model.`` level of CLIPTextModel (not of CLIPTextModelWithProjection), and loading is non-strict, so check
    that nothing is missing and that only a dropped last layer (SD2) is left over."""
    if not hasattr(model, "text_model"):
        state = {key.removeprefix("text_model."): value for key, value in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not [key for key in missing if not key.endswith("position_ids")], missing
    last = model.config.num_hidden_layers
    assert all(f"encoder.layers.{last}." in key for key in unexpected), unexpected
    return model.eval()


def reference_clip_l(checkpoint: dict[str, Tensor]) -> transformers.CLIPTextModel:
    cfg = factory.TINY_CLIP
    config = transformers.CLIPTextConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_positions,
        hidden_act="quick_gelu",
    )
    return _load_text_model(transformers.CLIPTextModel(config), convert_ldm_clip_checkpoint(checkpoint))


def reference_open_clip(checkpoint: dict[str, Tensor], prefix: str, *, sd2: bool) -> transformers.PreTrainedModel:
    """SD2: diffusers' text encoder is a CLIPTextModel one block shorter; SDXL bigG: full depth, with projection."""
    cfg = factory.TINY_OPEN_CLIP
    config = transformers.CLIPTextConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.width,
        intermediate_size=4 * cfg.width,
        num_hidden_layers=cfg.layers - 1 if sd2 else cfg.layers,
        num_attention_heads=cfg.heads,
        max_position_embeddings=cfg.context_length,
        hidden_act="gelu",
        projection_dim=cfg.projection_dim,
    )
    model = transformers.CLIPTextModel(config) if sd2 else transformers.CLIPTextModelWithProjection(config)
    return _load_text_model(model, convert_open_clip_checkpoint(model, checkpoint, prefix=prefix))


# --- per-component comparisons -----------------------------------------------------------------------------------


def compare_text_encoders(kind: str, ours: StableDiffusionModel, checkpoint: dict[str, Tensor]) -> dict[str, Tensor]:
    """Compare what the family's pipeline takes from its text encoder(s); return the reference UNet conditioning."""
    family = factory.FAMILY_OF[kind]
    if family == "sd1":
        tokens = prompt_tokens(pad_id=END_OF_TEXT)
        reference = reference_clip_l(checkpoint)
        out = reference(tokens, output_hidden_states=True)
        clip = ours.text_encoders["clip_l"]
        assert_close("SD1 CLIP-L last hidden + final norm", clip(tokens, need_pooled=False).hidden,
                     out.last_hidden_state)
        # diffusers' clip_skip=1 (A1111's clip skip 2): final_layer_norm(hidden_states[-2])
        skip2 = reference.final_layer_norm(out.hidden_states[-2])
        assert_close("SD1 CLIP-L clip skip 2", clip(tokens, skip_last_layers=1, need_pooled=False).hidden, skip2)
        return {"context": out.last_hidden_state}
    if family == "sd2":
        tokens = prompt_tokens(pad_id=0)
        reference = reference_open_clip(checkpoint, "cond_stage_model.model.", sd2=True)
        expected = reference(tokens).last_hidden_state
        actual = ours.text_encoders["open_clip_h"](tokens, skip_last_layers=1, apply_final_norm=True).hidden
        assert_close("SD2 OpenCLIP-H penultimate + ln_final", actual, expected)
        return {"context": expected}
    clip_tokens, open_clip_tokens = prompt_tokens(pad_id=END_OF_TEXT), prompt_tokens(pad_id=0)
    clip_out = reference_clip_l(checkpoint)(clip_tokens, output_hidden_states=True)
    clip = ours.text_encoders["clip_l"](clip_tokens, skip_last_layers=1, apply_final_norm=False, need_pooled=False)
    assert_close("SDXL CLIP-L hidden_states[-2]", clip.hidden, clip_out.hidden_states[-2])
    bigg_reference = reference_open_clip(checkpoint, "conditioner.embedders.1.model.", sd2=False)
    bigg_out = bigg_reference(open_clip_tokens, output_hidden_states=True)
    bigg = ours.text_encoders["open_clip_g"](open_clip_tokens, skip_last_layers=1, apply_final_norm=False)
    assert_close("SDXL bigG hidden_states[-2]", bigg.hidden, bigg_out.hidden_states[-2])
    assert_close("SDXL bigG projected pooled (text_embeds)", bigg.pooled, bigg_out.text_embeds)
    context = torch.cat([clip_out.hidden_states[-2], bigg_out.hidden_states[-2]], dim=-1)
    return {"context": context, "pooled": bigg_out.text_embeds}


def compare_unet(ours: StableDiffusionModel, reference: UNet2DConditionModel, conditioning: dict[str, Tensor]) -> None:
    """The UNet output, and what the middle block adds to its input. With random weights the residual stream grows
    through the down path, so the middle block barely moves the final output; its own change is checked too."""
    middles: dict[str, Tensor] = {}

    def record(name: str):
        return lambda _module, args, out: middles.__setitem__(name, out - args[0])

    hooks = [
        ours.unet.middle_block.register_forward_hook(record("ours")),
        reference.mid_block.register_forward_hook(record("reference")),
    ]
    try:
        _compare_unet_output(ours, reference, conditioning)
    finally:
        for hook in hooks:
            hook.remove()
    assert_close("UNet middle block output - input", middles["ours"], middles["reference"])


def _compare_unet_output(ours: StableDiffusionModel, reference: UNet2DConditionModel,
                         conditioning: dict[str, Tensor]) -> None:
    generator = torch.Generator().manual_seed(3)
    channels = ours.unet.config.in_channels
    x = torch.randn(2, channels, LATENT_SIZE, LATENT_SIZE, generator=generator)
    timesteps = torch.tensor([25.0, 731.0])
    context = conditioning["context"]
    if "pooled" in conditioning:
        time_ids = torch.tensor([[32.0, 32.0, 0.0, 0.0, 32.0, 32.0], [48.0, 40.0, 8.0, 4.0, 32.0, 32.0]])
        added = {"text_embeds": conditioning["pooled"], "time_ids": time_ids}
        expected = reference(x, timesteps, context, added_cond_kwargs=added).sample
        y = sdxl_adm_vector(conditioning["pooled"], time_ids, dim_per_value=SDXL_TIME_EMBED_DIM)
        actual = ours.unet(x, timesteps, context, y)
    else:
        expected = reference(x, timesteps, context).sample
        actual = ours.unet(x, timesteps, context)
    assert_close("UNet output", actual, expected)


def compare_vae(ours: StableDiffusionModel, reference: DiffusersAutoencoderKL) -> None:
    generator = torch.Generator().manual_seed(4)
    latent = torch.randn(2, ours.vae.config.z_channels, LATENT_SIZE, LATENT_SIZE, generator=generator)
    assert_close("VAE decode", ours.vae.decode(latent), reference.decode(latent).sample)
    image = torch.rand(2, 3, 2 * LATENT_SIZE, 2 * LATENT_SIZE, generator=generator) * 2 - 1
    posterior, expected = ours.vae.encode(image), reference.encode(image).latent_dist
    assert_close("VAE encode mean", posterior.mean, expected.mean)
    assert_close("VAE encode mode", posterior.mode(), expected.mode())
    assert_close("VAE encode logvar", posterior.logvar, expected.logvar)
    assert ours.vae.config.scale_factor == pytest.approx(reference.config.scaling_factor)


# --- the tests ----------------------------------------------------------------------------------------------------


EXPECTED_ENCODERS = {
    "sd1": [("clip_l", factory.TINY_CLIP)],
    "sd2": [("open_clip_h", factory.TINY_OPEN_CLIP)],
    "sdxl": [("clip_l", factory.TINY_CLIP), ("open_clip_g", factory.TINY_OPEN_CLIP)],
}


def check_detection_round_trip(kind: str, model: StableDiffusionModel) -> None:
    family = factory.FAMILY_OF[kind]
    assert model.config.family == family
    assert model.config.unet == factory.TINY_UNETS[kind]
    assert model.config.vae == (factory.TINY_VAE_XL if kind == "sdxl" else factory.TINY_VAE)
    assert [(spec.name, spec.config) for spec in model.config.text_encoders] == EXPECTED_ENCODERS[family]
    assert sorted(model.text_encoders) == sorted(name for name, _ in EXPECTED_ENCODERS[family])
    expected_prediction = "v_prediction" if kind == "sd2" else "epsilon"
    assert model.prediction_type == expected_prediction
    assert model.config.prediction_type == expected_prediction


@pytest.mark.parametrize("kind", ["sd1", "sd1_inpaint", "sd2", "sdxl"])
@torch.inference_mode()
def test_loaded_checkpoint_matches_diffusers_single_file_conversion(kind: str, tmp_path: Path) -> None:
    """`load_model` on a tiny original-layout checkpoint vs the same file converted by diffusers' single-file
    conversion (diffusers UNet2DConditionModel / AutoencoderKL, transformers CLIPTextModel[WithProjection]), fp32:
    text-encoder outputs, UNet output, VAE decode and encode each within 1e-4 * max |reference|.

    SD2 carries a `<stem>.yaml` with ``parameterization: "v"`` beside it (random weights cannot reveal v-prediction);
    the same config dict drives diffusers' config helpers.
    """
    path = factory.write_tiny_checkpoint(kind, tmp_path)
    original = ldm_original_config(kind)
    if kind == "sd2":
        path.with_suffix(".yaml").write_text(yaml.safe_dump(original), encoding="utf8")

    model = load_model(path, dtype=torch.float32)
    check_detection_round_trip(kind, model)
    if kind == "sd2":
        assert model.prediction_type == "v_prediction" and model.config.family == "sd2"

    checkpoint = load_file(str(path))
    reference_u = reference_unet(original, checkpoint)
    if kind == "sd1_inpaint":
        assert model.is_inpainting and model.unet.config.in_channels == 9
        assert reference_u.config.in_channels == 9 and reference_u.conv_in.weight.shape[1] == 9
    else:
        assert not model.is_inpainting

    conditioning = compare_text_encoders(kind, model, checkpoint)
    compare_unet(model, reference_u, conditioning)
    compare_vae(model, reference_vae(original, checkpoint))
