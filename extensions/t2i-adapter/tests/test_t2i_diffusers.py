"""Equivalence with diffusers (test-only reference): ``diffusers.T2IAdapter`` and ``UNet2DConditionModel``.

* Adapter features: a random diffusers ``T2IAdapter`` (full, full_xl, light; 1- and 3-channel) saved with
  ``save_pretrained`` (a folder) or as one diffusers-layout ``.safetensors`` file is loaded by ``load_adapter``
  (key conversion to the original layout) and run on the same condition: max abs error <= 1e-5, fp32, also at sizes
  that are not multiples of 64 (both pool with ceil mode).
* Injection: our UNet with ``unet_hooks_for`` hooks vs diffusers' UNet given the same (weighted) features as
  ``down_intrablock_additional_residuals``; identical weights via diffusers' ``convert_ldm_unet_checkpoint`` (the
  helpers of tests/sd/test_unet.py); tolerance 1e-4 * max(1, |reference|max), fp32, as the UNet's own tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from diffusers import T2IAdapter
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from t2i_adapter import compute_features, load_adapter, unet_hooks_for  # noqa: E402

from modules.sd.unet import UNetConfig, sdxl_adm_vector  # noqa: E402
from tests.sd.test_unet import SD1_TINY, SDXL_POOLED_DIM, SDXL_TIME_DIM, SDXL_TINY, assert_close, build_pair  # noqa: E402

# (adapter_type, channels, in_channels, expected kind, family, condition sizes)
CASES = {
    "full-1ch": ("full_adapter", [32, 64, 64, 64], 1, "full", "sd1", [(64, 64), (72, 104)]),
    "full-3ch": ("full_adapter", [32, 64, 64, 64], 3, "full", "sd1", [(64, 64), (72, 104)]),
    "xl-1ch": ("full_adapter_xl", [32, 64, 64, 64], 1, "sdxl", "sdxl", [(128, 128), (80, 112)]),
    "light-3ch": ("light_adapter", [32, 64, 64], 3, "light", "sd1", [(64, 64), (72, 104)]),
}


def make_diffusers_adapter(case: str, seed: int = 0) -> T2IAdapter:
    adapter_type, channels, in_channels, *_ = CASES[case]
    torch.manual_seed(seed)
    factor = 16 if adapter_type == "full_adapter_xl" else 8
    reference = T2IAdapter(in_channels=in_channels, channels=channels, num_res_blocks=4 if "light" in case else 2,
                           downscale_factor=factor, adapter_type=adapter_type).eval()
    with torch.no_grad():  # diffusers' init leaves biases near zero; make every weight matter
        for p in reference.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return reference


@pytest.mark.parametrize("storage", ["folder", "single-file"])
@pytest.mark.parametrize("case", list(CASES))
@torch.no_grad()
def test_features_match_diffusers_t2i_adapter(case: str, storage: str, tmp_path: Path) -> None:
    _, _, in_channels, kind, family, sizes = CASES[case]
    reference = make_diffusers_adapter(case)
    if storage == "folder":
        path = tmp_path / f"t2iadapter_canny_{case}"
        reference.save_pretrained(path, safe_serialization=True)
    else:
        path = tmp_path / f"t2iadapter_canny_{case}.safetensors"
        save_file({f"adapter.{k}": v.contiguous() for k, v in reference.adapter.state_dict().items()}, str(path))
    adapter = load_adapter(path)
    assert (adapter.kind, adapter.family, adapter.cond_channels, adapter.condition) == (
        kind, family, in_channels, "canny")
    generator = torch.Generator().manual_seed(1)
    for height, width in sizes:
        cond = torch.rand(2, in_channels, height, width, generator=generator)
        expected = reference(cond)
        actual = compute_features(adapter, cond).features
        assert [f.shape for f in actual] == [f.shape for f in expected]
        for a, e in zip(actual, expected, strict=True):
            assert e.abs().max() > 0.01
            assert (a - e).abs().max().item() <= 1e-5


def original_to_diffusers(state: dict[str, torch.Tensor], light: bool, per_level: int) -> dict[str, torch.Tensor]:
    """The mapping of reference §1.7, written here independently of the loader's converter."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "body" and light:
            key = ".".join(["body", parts[1], "resnets", *parts[3:]]) if parts[2] == "body" else key
        elif parts[0] == "body":
            level, j = divmod(int(parts[1]), per_level)
            rest = parts[2:]
            key = ".".join(["body", str(level), *rest]) if rest[0] == "in_conv" else ".".join(
                ["body", str(level), "resnets", str(j), *rest])
        out[key] = value
    return out


@pytest.mark.parametrize("case", list(CASES))
@torch.no_grad()
def test_original_layout_file_equals_diffusers_after_key_conversion(case: str, tmp_path: Path) -> None:
    """A random original-layout file (our model's keys) mapped to diffusers keys loads strictly into diffusers'
    T2IAdapter and gives the same features (max abs error <= 1e-5)."""
    from t2i_adapter.detection import build_module, detect

    reference = make_diffusers_adapter(case, seed=4)
    ours_path = tmp_path / "adapter.pth"
    torch.save(original := {k: torch.randn_like(v) * 0.05 for k, v in _original_keys(reference).items()}, ours_path)
    adapter = load_adapter(ours_path)
    assert adapter.module.state_dict().keys() == original.keys()
    converted = original_to_diffusers(original, "light" in case, 2)
    reference.adapter.load_state_dict(converted, strict=True)
    cond = torch.rand(1, CASES[case][2], *CASES[case][5][1])
    for a, e in zip(compute_features(adapter, cond).features, reference(cond), strict=True):
        assert (a - e).abs().max().item() <= 1e-5
    assert type(build_module(detect(original))) is type(adapter.module)


def _original_keys(reference: T2IAdapter) -> dict[str, torch.Tensor]:
    """Original-layout names and shapes for the architecture of ``reference`` (inverse of the mapping above)."""
    light = "light" in reference.config.adapter_type
    state = reference.adapter.state_dict()
    per_level = 1 + max(int(k.split(".")[3]) for k in state if ".resnets." in k and k.startswith("body.0."))
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "body" and "resnets" in parts:
            level, j = int(parts[1]), int(parts[3])
            key = (f"body.{level}.body.{j}." if light else f"body.{level * per_level + j}.") + ".".join(parts[4:])
        elif parts[0] == "body" and not light:
            key = f"body.{int(parts[1]) * per_level}." + ".".join(parts[2:])
        out[key] = value
    return out


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
@torch.no_grad()
def test_injected_unet_matches_diffusers_unet(family: str, tmp_path: Path) -> None:
    """Features of one adapter at weight 0.7 plus a second at 0.5 (summed) vs diffusers with the same residuals."""
    cfg: UNetConfig = SD1_TINY if family == "sd1" else SDXL_TINY
    ours, reference_unet = build_pair(cfg)
    case = "full-3ch" if family == "sd1" else "xl-1ch"
    adapters, features = [], []
    image = 64 if family == "sd1" else 128
    latent = image // 8  # SDXL's first feature is at 1/16 of the image: the UNet's first downsample
    generator = torch.Generator().manual_seed(3)
    cond = torch.rand(1, 3, image, image, generator=generator)
    for seed in (0, 1):
        reference_adapter = make_diffusers_adapter(case, seed)
        path = tmp_path / f"{family}_{seed}"
        reference_adapter.save_pretrained(path, safe_serialization=True)
        adapters.append(reference_adapter)
        features.append(compute_features(load_adapter(path), cond))
    hooks = unet_hooks_for([(features[0], 0.7), (features[1], 0.5)], family, unet_config=cfg)
    residuals = [0.7 * a + 0.5 * b for a, b in zip(adapters[0](cond[:, :CASES[case][2]]),
                                                   adapters[1](cond[:, :CASES[case][2]]), strict=True)]
    x = torch.randn(2, 4, latent, latent, generator=generator)
    t = torch.tensor([10.0, 733.5])
    context = torch.randn(2, 7, cfg.context_dim, generator=generator)
    kwargs, y = {}, None
    if family == "sdxl":
        pooled = torch.randn(2, SDXL_POOLED_DIM, generator=generator)
        time_ids = torch.tensor([[512.0, 512.0, 0.0, 0.0, 512.0, 512.0]] * 2)
        kwargs["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": time_ids}
        y = sdxl_adm_vector(pooled, time_ids, dim_per_value=SDXL_TIME_DIM)
    # diffusers adds the SDXL middle residual only when its shape equals the batch's, so repeat the batch-1 features
    repeated = [r.repeat(2, 1, 1, 1) for r in residuals]
    expected = reference_unet(x, t, context, down_intrablock_additional_residuals=repeated, **kwargs).sample
    actual = ours(x, t, context, y, hooks=hooks)
    assert (actual - ours(x, t, context, y)).abs().max() > 1e-2  # the features matter
    assert_close(actual, expected)
