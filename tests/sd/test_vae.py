"""Tests for modules/sd/vae.py: layout, equivalence with diffusers, scaling helpers, tiling, fp16 NaN fallback."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F

from modules.sd.vae import (
    AutoencoderKL,
    VAEConfig,
    fix_vae_state_dict,
    run_tiled,
    tile_starts,
)

TINY = VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1)


def random_vae(config: VAEConfig = TINY, seed: int = 0) -> AutoencoderKL:
    """A VAE whose every tensor (norm affines and biases included) is random, so no mix-up can hide."""
    torch.manual_seed(seed)
    vae = AutoencoderKL(config).eval()
    with torch.no_grad():
        for param in vae.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return vae


def smooth_images(size: int, seed: int = 1) -> torch.Tensor:
    """Image-like input in [-1, 1]: low-frequency colour fields rather than white noise."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 4, 4, generator=generator) * 2 - 1
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)


def diffusers_twin(vae: AutoencoderKL, sample_size: int = 32):
    """diffusers' AutoencoderKL with our weights, converted by diffusers' own LDM->diffusers converter."""
    diffusers = pytest.importorskip("diffusers")
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    cfg = vae.config
    reference = diffusers.AutoencoderKL(
        in_channels=cfg.in_channels,
        out_channels=cfg.out_channels,
        down_block_types=("DownEncoderBlock2D",) * len(cfg.ch_mult),
        up_block_types=("UpDecoderBlock2D",) * len(cfg.ch_mult),
        block_out_channels=tuple(cfg.ch * m for m in cfg.ch_mult),
        layers_per_block=cfg.num_res_blocks,
        latent_channels=cfg.z_channels,
        norm_num_groups=32,
        sample_size=sample_size,
        scaling_factor=cfg.scale_factor,
    ).eval()
    checkpoint = {f"first_stage_model.{k}": v.clone() for k, v in vae.state_dict().items()}
    converted = convert_ldm_vae_checkpoint(checkpoint, dict(reference.config))
    reference.load_state_dict(converted, strict=True)
    return reference


def max_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return (actual.float() - expected.float()).abs().max().item()


@torch.no_grad()
def test_matches_diffusers_encode_and_decode():
    """Reference: diffusers.AutoencoderKL (fp32, same weights via convert_ldm_vae_checkpoint).

    Tolerance: max abs error <= 1e-4 x the reference output's max magnitude (fp32 summation-order noise).
    """
    vae = random_vae()
    reference = diffusers_twin(vae)
    images = smooth_images(32)

    ours = vae.encode(images)
    theirs = reference.encode(images).latent_dist
    assert max_error(ours.mean, theirs.mean) <= 1e-4 * theirs.mean.abs().max().item()
    assert max_error(ours.logvar, theirs.logvar) <= 1e-4 * theirs.logvar.abs().max().item()
    assert max_error(ours.mode(), theirs.mode()) <= 1e-4 * theirs.mode().abs().max().item()

    latent = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    expected = reference.decode(latent).sample
    assert expected.abs().max().item() > 0.1  # a real signal, not a degenerate zero output
    assert max_error(vae.decode(latent), expected) <= 1e-4 * expected.abs().max().item()


def test_full_size_parameter_names_and_shapes():
    """The SD1/SD2/SDXL VAE layout, checked against known checkpoint keys (248 tensors in a real file)."""
    with torch.device("meta"):
        vae = AutoencoderKL(VAEConfig())
    shapes = {k: tuple(v.shape) for k, v in vae.state_dict().items()}
    assert len(shapes) == 248
    assert shapes["decoder.up.3.block.0.conv1.weight"] == (512, 512, 3, 3)
    assert shapes["decoder.up.0.block.0.nin_shortcut.weight"] == (128, 256, 1, 1)
    assert shapes["decoder.up.1.upsample.conv.weight"] == (256, 256, 3, 3)
    assert shapes["encoder.down.0.block.0.norm1.weight"] == (128,)
    assert shapes["encoder.down.1.block.0.nin_shortcut.weight"] == (256, 128, 1, 1)
    assert shapes["encoder.down.2.downsample.conv.weight"] == (512, 512, 3, 3)
    assert "encoder.down.3.downsample.conv.weight" not in shapes
    assert "decoder.up.0.upsample.conv.weight" not in shapes
    assert shapes["encoder.mid.attn_1.q.weight"] == (512, 512, 1, 1)
    assert shapes["decoder.mid.attn_1.proj_out.weight"] == (512, 512, 1, 1)
    assert shapes["encoder.conv_out.weight"] == (8, 512, 3, 3)
    assert shapes["quant_conv.weight"] == (8, 8, 1, 1)
    assert shapes["post_quant_conv.weight"] == (4, 4, 1, 1)
    assert shapes["decoder.conv_in.weight"] == (512, 4, 3, 3)


@torch.no_grad()
def test_fix_state_dict_handles_linear_attention_and_prefix():
    vae = random_vae()
    saved = {f"first_stage_model.{k}": v.clone() for k, v in vae.state_dict().items()}
    for key in list(saved):
        if ".attn_1." in key and key.endswith("weight") and not key.endswith("norm.weight"):
            saved[key] = saved[key][:, :, 0, 0]  # the [C, C] Linear shape of diffusers-converted files
    saved["loss.logvar"] = torch.zeros(())
    saved["model_ema.decay"] = torch.tensor(0.999)

    fixed = fix_vae_state_dict(saved)
    assert fixed["encoder.mid.attn_1.q.weight"].shape == (64, 64, 1, 1)
    assert fixed["decoder.mid.attn_1.norm.weight"].shape == (64,)
    restored = AutoencoderKL(TINY).eval()
    restored.load_state_dict(fixed, strict=True)
    latent = torch.randn(1, 4, 8, 8)
    assert torch.equal(restored.decode(latent), vae.decode(latent))


@torch.no_grad()
def test_scaled_latent_helpers():
    vae = random_vae()
    images = smooth_images(32)
    mode = vae.encode_to_latent(images, sample=False)
    assert torch.allclose(mode, vae.encode(images).mode() * TINY.scale_factor)

    first = vae.encode_to_latent(images, sample=True, generator=torch.Generator().manual_seed(7))
    again = vae.encode_to_latent(images, sample=True, generator=torch.Generator().manual_seed(7))
    other = vae.encode_to_latent(images, sample=True, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    posterior = vae.encode(images)
    noise = torch.randn(posterior.mean.shape, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(first, (posterior.mean + posterior.std * noise) * TINY.scale_factor, atol=1e-6)

    assert torch.allclose(vae.decode_latent(mode), vae.decode(mode / TINY.scale_factor))


def test_tile_starts_cover_with_overlap():
    assert tile_starts(64, 64, 16, 8) == [0]
    for length, tile, overlap, align in [(100, 32, 8, 1), (96, 64, 16, 2), (200, 48, 16, 8), (33, 16, 4, 1)]:
        starts = tile_starts(length, tile, overlap, align)
        assert starts[0] == 0 and starts[-1] == length - tile
        assert all(s % align == 0 for s in starts[:-1])
        assert all(b - a <= tile - overlap + align for a, b in itertools.pairwise(starts))


def test_tile_blending_is_exact_for_pointwise_functions():
    """Blend weights must sum to one everywhere: a per-pixel function tiles with no error (fp32 rounding only)."""
    images = torch.randn(2, 3, 37, 29, generator=torch.Generator().manual_seed(0))

    def upscale(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x * 2 + 1, scale_factor=4, mode="nearest")

    assert max_error(run_tiled(upscale, images, 16, 6, align=1, scale=4), upscale(images)) < 1e-5

    def downscale(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 4)

    wide = torch.randn(1, 3, 80, 72, generator=torch.Generator().manual_seed(1))
    assert max_error(run_tiled(downscale, wide, 32, 8, align=4, scale=0.25), downscale(wide)) < 1e-6


@torch.no_grad()
def test_tiled_single_tile_equals_untiled():
    vae = random_vae()
    images = smooth_images(32)
    latent = vae.encode_to_latent(images, sample=False)
    assert torch.equal(vae.encode_to_latent(images, sample=False, tile_size=64), latent)
    assert torch.equal(vae.decode_latent(latent, tile_size=64), vae.decode_latent(latent))


@torch.no_grad()
def test_tiled_matches_untiled_as_closely_as_diffusers_tiling():
    """Reference: the untiled result, and diffusers' own tiling (24 px tiles, 25% overlap) on the same weights.

    Each tile sees only its own GroupNorm statistics and attention context, so no tiler is exact (on this random
    tiny model the errors are 35-60% of the output's std). The tolerance is therefore comparative: our mean abs
    error against the untiled result must not exceed diffusers' (measured: decode 0.19 vs 0.32, encode 0.19 vs 0.26).
    """
    vae = random_vae()
    reference = diffusers_twin(vae, sample_size=24)
    reference.enable_tiling()

    coarse = torch.randn(1, 4, 3, 3, generator=torch.Generator().manual_seed(5))
    latent = F.interpolate(coarse, size=(16, 16), mode="bicubic", align_corners=False)
    untiled = vae.decode(latent)
    ours = vae.tiled_decode(latent, tile_size=24, overlap=6)
    theirs = reference.decode(latent).sample
    assert ours.shape == untiled.shape
    assert (ours - untiled).abs().mean() <= (theirs - untiled).abs().mean()

    images = smooth_images(32)
    untiled_mean = vae.encode(images).mean
    ours_mean = vae.tiled_encode_moments(images, tile_size=24, overlap=6).chunk(2, dim=1)[0]
    theirs_mean = reference.encode(images).latent_dist.mean
    assert ours_mean.shape == untiled_mean.shape
    assert (ours_mean - untiled_mean).abs().mean() <= (theirs_mean - untiled_mean).abs().mean()


@torch.no_grad()
def test_half_precision_nan_falls_back_to_float32():
    """An fp16 overflow (huge first decoder conv) yields inf/NaN; decode_latent must redo it in fp32."""
    vae = random_vae()
    vae.decoder.conv_in.weight.mul_(1e5)
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2)) * TINY.scale_factor
    vae.half()
    expected = copy.deepcopy(vae).float().decode_latent(latent)  # fp32 maths on the same fp16-rounded weights
    assert torch.isfinite(expected).all()
    assert not torch.isfinite(vae.decode(latent / TINY.scale_factor)).all()
    recovered = vae.decode_latent(latent)
    assert recovered.dtype == torch.float32
    assert torch.isfinite(recovered).all()
    assert torch.allclose(recovered, expected, atol=1e-4 * expected.abs().max().item())
    assert vae.dtype == torch.float16  # the module goes back to the precision it was given
    assert not torch.isfinite(vae.decode_latent(latent, nan_fallback=False)).all()
