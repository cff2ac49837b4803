"""From condition to UNet hooks: condition preparation, weighted sums, style tokens, CoAdapter fusion, injection
points for other UNet layouts, the CLIP-vision path of style adapters, and the hooks in a real generation."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from t2i_adapter import (  # noqa: E402
    AdapterFeatures,
    LoadedAdapter,
    compute_features,
    injection_points,
    load_adapter,
    prepare_condition,
    unet_hooks_for,
)
from t2i_adapter.adapter_full import Adapter, FullAdapterConfig  # noqa: E402
from t2i_adapter.coadapter_fuser import TASK_INDEX, CoAdapterFuser, FuserConfig  # noqa: E402
from t2i_adapter.style_adapter import StyleAdapter, StyleAdapterConfig  # noqa: E402

from modules.errors import MissingWeights  # noqa: E402
from modules.processing import StableDiffusionProcessingTxt2Img, process_images  # noqa: E402
from modules.sd.unet import SD15_UNET, UNetConfig  # noqa: E402

pytest_plugins = ["tests.pipeline_fixtures"]


def maps(seed: int, batch: int = 1, channels=(8, 16, 32, 32), size: int = 16) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, size // 2**i, size // 2**i, generator=generator) for i, c in enumerate(channels)]


def test_prepare_condition_channels_and_padding() -> None:
    rgb = torch.rand(2, 3, 24, 40)
    assert torch.equal(prepare_condition(rgb, 1, 8), rgb[:, :1])
    grey = torch.rand(1, 1, 24, 40)
    assert torch.equal(prepare_condition(grey, 3, 8), grey.expand(1, 3, 24, 40))
    padded = prepare_condition(rgb, 3, 16)  # SDXL: 24x40 -> 32x48, pixels stay in place, edges repeated
    assert padded.shape == (2, 3, 32, 48)
    assert torch.equal(padded[:, :, :24, :40], rgb)
    assert torch.equal(padded[:, :, 31, 47], rgb[:, :, 23, 39]) and torch.equal(padded[:, :, 5, 45], rgb[:, :, 5, 39])
    with pytest.raises(ValueError, match="3-channel"):
        prepare_condition(torch.rand(1, 2, 8, 8), 3, 8)


def test_weighted_units_are_summed_at_the_sd1_points() -> None:
    a, b = AdapterFeatures(maps(0), None), AdapterFeatures(maps(1), None)
    hooks = unet_hooks_for([(a, 0.7), (b, 0.5), (AdapterFeatures(maps(2), None), 0.0)], "sd1")
    assert list(hooks.input_block_additions) == [2, 5, 8, 11] and hooks.middle_block_addition is None
    for feature, x, y in zip(hooks.input_block_additions.values(), a.features, b.features, strict=True):
        torch.testing.assert_close(feature, 0.7 * x + 0.5 * y)
    assert hooks.extra_context is None
    assert unet_hooks_for([(a, 0.0)], "sd1") is None and unet_hooks_for([], "sd1") is None


def test_units_of_different_sizes_are_aligned_to_the_first() -> None:
    a, b = AdapterFeatures(maps(0, size=16), None), AdapterFeatures(maps(1, size=32), None)
    hooks = unet_hooks_for([(a, 1.0), (b, 1.0)], "sd1")
    first = hooks.input_block_additions[2]
    expected = a.features[0] + torch.nn.functional.interpolate(b.features[0], size=(16, 16), mode="nearest")
    torch.testing.assert_close(first, expected)


def test_sdxl_points_and_style_tokens() -> None:
    spatial = AdapterFeatures(maps(0), None)
    style_a, style_b = AdapterFeatures(None, torch.randn(1, 8, 24)), AdapterFeatures(None, torch.randn(1, 4, 24))
    hooks = unet_hooks_for([(spatial, 1.0), (style_a, 0.5), (style_b, 2.0)], "sdxl")
    assert list(hooks.input_block_additions) == [3, 5, 8]
    assert torch.equal(hooks.middle_block_addition, spatial.features[3])
    torch.testing.assert_close(hooks.extra_context, torch.cat([0.5 * style_a.style_tokens,
                                                               2.0 * style_b.style_tokens], dim=1))
    only_style = unet_hooks_for([(style_a, 1.0)], "sd1")
    assert only_style.input_block_additions == {} and only_style.extra_context.shape == (1, 8, 24)


def test_injection_points_follow_the_unet_layout() -> None:
    demo = UNetConfig(model_channels=64, channel_mult=(1, 2, 2), num_res_blocks=1, transformer_depth=(0, 1, 1))
    assert injection_points("sd1", demo) == ((1, 3, 5), False)
    assert injection_points("sd1", SD15_UNET) == ((2, 5, 8, 11), False)
    assert injection_points("sdxl", UNetConfig(channel_mult=(1, 2, 4))) == ((3, 5, 8), True)
    with pytest.raises(ValueError, match="gives 4 feature maps but this sd1 UNet takes 3"):
        unet_hooks_for([(AdapterFeatures(maps(0), None), 1.0)], "sd1", unet_config=demo)


def fuser_adapter(trained: bool) -> LoadedAdapter:
    torch.manual_seed(0)
    module = CoAdapterFuser(FuserConfig(unet_channels=(8, 16, 32, 32), width=24, num_head=2, layers=1)).eval()
    if trained:  # released fusers have non-zero projections; fresh ones start at zero
        with torch.no_grad():
            for proj in module.spatial_ch_projs:
                proj.weight.normal_(0, 0.5)
            module.seq_proj.normal_(0, 0.5)
    return LoadedAdapter("coadapter-fuser", Path("f.pth"), "coadapter_fuser", "sd1", 0, None, module, module.config)


def test_coadapter_fuser() -> None:
    depth = AdapterFeatures(maps(0), None, condition="depth")
    sketch = AdapterFeatures(maps(1), None, condition="sketch")
    style = AdapterFeatures(None, torch.randn(1, 8, 24), condition="style")
    units = [(depth, 0.8), (sketch, 1.2), (style, 0.5)]
    plain = unet_hooks_for(units, "sd1")
    untrained = unet_hooks_for(units, "sd1", fuser=fuser_adapter(False))
    for key, value in plain.input_block_additions.items():  # zero projections: fusion is the weighted sum
        torch.testing.assert_close(untrained.input_block_additions[key], value)
    torch.testing.assert_close(untrained.extra_context, plain.extra_context)

    fuser = fuser_adapter(True)
    fused = unet_hooks_for(units, "sd1", fuser=fuser)
    assert (fused.extra_context - plain.extra_context).abs().max() > 1e-3
    single = unet_hooks_for([(depth, 1.0)], "sd1", fuser=fuser)
    ratio = single.input_block_additions[5] / depth.features[1]  # one condition: a per-channel scale
    assert (ratio - ratio[:, :, :1, :1]).abs().max() < 1e-4 and (ratio - 1).abs().max() > 1e-3
    renamed = unet_hooks_for([(depth, 1.0)], "sd1", fuser=fuser, conditions=["sketch"])
    assert (renamed.input_block_additions[5] - single.input_block_additions[5]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="does not know the condition 'hands'"):
        unet_hooks_for([(depth, 1.0)], "sd1", fuser=fuser, conditions=["hands"])
    with pytest.raises(ValueError, match="CoAdapter fuser"):
        compute_features(fuser, torch.rand(1, 3, 8, 8))
    assert TASK_INDEX["openpose"] == 7


def write_clip_vision(folder: Path, single_file: bool) -> torch.nn.Module:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1,
                              image_size=28, patch_size=14)
    model = CLIPVisionModel(config).eval()
    folder.mkdir(parents=True)
    if single_file:
        save_file({f"vision_model.{k}": v.contiguous() for k, v in model.state_dict().items()},
                  str(folder / "clip_vision_l14.safetensors"))
    else:
        model.save_pretrained(folder / "clip-vit-large-patch14")
    return model


@pytest.mark.parametrize("single_file", [False, True], ids=["transformers-folder", "single-file"])
@torch.no_grad()
def test_style_adapter_encodes_pictures_with_clip_vision(tmp_path: Path, single_file: bool) -> None:
    from t2i_adapter.clip_vision import encode_pictures

    models = tmp_path / "models"
    clip = write_clip_vision(models / "clip_vision", single_file)
    torch.manual_seed(1)
    style = StyleAdapter(StyleAdapterConfig(width=64, context_dim=24, layers=1, num_token=4))  # 8 heads: not in files
    (models / "T2I-Adapter").mkdir()
    torch.save(style.state_dict(), models / "T2I-Adapter" / "t2iadapter_style_sd14v1.pth")
    adapter = load_adapter(models / "T2I-Adapter" / "t2iadapter_style_sd14v1.pth")
    assert (adapter.kind, adapter.condition, adapter.clip_vision_dir) == ("style", "style", models / "clip_vision")
    picture = torch.rand(1, 3, 40, 56)
    tokens = compute_features(adapter, picture).style_tokens
    assert tokens.shape == (1, 4, 24)
    torch.testing.assert_close(tokens, style.eval()(encode_pictures(clip, picture)))
    hidden = encode_pictures(clip, picture)
    assert hidden.shape == (1, 5, 64)
    torch.testing.assert_close(compute_features(adapter, hidden).style_tokens, tokens)  # CLIP tokens directly

    adapter.clip_vision_dir = tmp_path / "nowhere"
    adapter.cache.clear()
    with pytest.raises(MissingWeights, match="nowhere"):
        compute_features(adapter, picture)


def tiny_sd1_adapter(tmp_path: Path) -> LoadedAdapter:
    """An adapter shaped for the tiny SD1 test model (levels of 32 and 64 channels, VAE downscale 2)."""
    torch.manual_seed(0)
    module = Adapter(FullAdapterConfig(channels=(32, 64), cond_channels=1, unshuffle=2))
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(4.0)
    path = tmp_path / "tiny_canny.pth"
    torch.save(module.state_dict(), path)
    return load_adapter(path)


def test_hooks_steer_a_real_generation(pipeline_env, tiny_sd1, tmp_path: Path) -> None:
    """``p.unet_hooks`` from unet_hooks_for changes the picture; weight 0 gives no hooks and the plain picture."""
    adapter = tiny_sd1_adapter(tmp_path)
    cond = torch.zeros(1, 3, 32, 32)
    cond[:, :, 8:24, 8:24] = 1.0
    features = compute_features(adapter, cond)
    assert [f.shape[-1] for f in features.features] == [16, 8]

    def generate(weight: float) -> np.ndarray:
        p = pipeline_env.apply(StableDiffusionProcessingTxt2Img(
            sd_model=tiny_sd1, prompt="a red cube", seed=3, steps=2, width=32, height=32, sampler_name="Euler",
            do_not_save_samples=True, do_not_save_grid=True))
        p.unet_hooks = unet_hooks_for([(features, weight)], "sd1", unet_config=tiny_sd1.unet.config)
        return np.asarray(process_images(p).images[0], dtype=np.int16)

    plain = generate(0.0)
    steered = generate(1.0)
    assert np.abs(steered - plain).max() > 10
    assert np.array_equal(generate(0.0), plain)
