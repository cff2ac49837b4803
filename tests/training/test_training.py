"""Smoke training of both phases at toy sizes: a few steps run, checkpoint, resume, and keep their promises
(whitened latents, EMA weights, the pipeline's own token chunks)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from modules.conditioning import TextConditioner
from modules.training import train_unet as tu
from modules.training import train_vae as tv
from modules.training.demo_model_config import TINY, DemoModelConfig
from modules.training.latent_pool import CACHE_NAME
from modules.training.text_side import caption_tokens, caption_vocabulary

VAE_SETTINGS = tv.VAESettings(batch_size=2, warmup_steps=2, whiten_count=16, quality_count=8)
UNET_SETTINGS = tu.UNetSettings(batch_size=4, latents_per_caption=2, pool_size=16, warmup_steps=2)


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Toy models run fastest on one thread."""


pytest_plugins = ["tests.pipeline_fixtures"]


def test_vae_phase_trains_checkpoints_and_resumes(tmp_path: Path) -> None:
    vae, info = tv.train_vae(TINY, tmp_path, 600, settings=VAE_SETTINGS, max_steps=3, log=None, show_bar=False)
    assert info["steps"] == 3 and torch.isfinite(torch.tensor(info["final"]["loss"]))
    saved = torch.load(tmp_path / tv.CHECKPOINT_NAME, weights_only=True)
    assert saved["complete"] and saved["step"] == 3
    # a finished phase is loaded, not retrained
    again, info_again = tv.train_vae(TINY, tmp_path, 600, settings=VAE_SETTINGS, max_steps=50, show_bar=False)
    assert info_again == info
    for a, b in zip(vae.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


class InterruptAfter:
    """Wraps a loss function; raises KeyboardInterrupt (Ctrl+C) on call number ``stop`` and counts calls."""

    def __init__(self, fn: Callable, stop: int | None = None) -> None:
        self.fn, self.stop, self.calls = fn, stop, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == self.stop:
            raise KeyboardInterrupt
        return self.fn(*args, **kwargs)


def test_interrupted_vae_run_resumes_where_it_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    straight, _ = tv.train_vae(TINY, tmp_path / "a", 600, settings=VAE_SETTINGS, max_steps=3, show_bar=False)
    monkeypatch.setattr(tv, "vae_loss", InterruptAfter(tv.vae_loss, stop=3))
    with pytest.raises(KeyboardInterrupt):
        tv.train_vae(TINY, tmp_path / "b", 600, settings=VAE_SETTINGS, max_steps=3, show_bar=False)
    assert torch.load(tmp_path / "b" / tv.CHECKPOINT_NAME, weights_only=True)["step"] == 2
    counter = InterruptAfter(tv.vae_loss.fn)
    monkeypatch.setattr(tv, "vae_loss", counter)
    resumed, info = tv.train_vae(TINY, tmp_path / "b", 600, settings=VAE_SETTINGS, max_steps=3, show_bar=False)
    assert counter.calls == 1 and info["steps"] == 3  # only the missing step ran
    for name, value in straight.state_dict().items():  # same pictures, noise and optimizer state as without a break
        torch.testing.assert_close(resumed.state_dict()[name], value, atol=1e-4, rtol=1e-3)


def test_interrupted_unet_run_resumes_where_it_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vae = tv.new_vae(TINY, 0).eval().requires_grad_(False)
    straight, _ = tu.train_unet(TINY, vae, tmp_path / "a", 600, settings=UNET_SETTINGS, max_steps=3, show_bar=False)
    monkeypatch.setattr(tu, "diffusion_loss", InterruptAfter(tu.diffusion_loss, stop=3))
    with pytest.raises(KeyboardInterrupt):
        tu.train_unet(TINY, vae, tmp_path / "b", 600, settings=UNET_SETTINGS, max_steps=3, show_bar=False)
    counter = InterruptAfter(tu.diffusion_loss.fn)
    monkeypatch.setattr(tu, "diffusion_loss", counter)
    resumed, _ = tu.train_unet(TINY, vae, tmp_path / "b", 600, settings=UNET_SETTINGS, max_steps=3, show_bar=False)
    assert counter.calls == 1
    for name, value in straight.state_dict().items():  # EMA weights, restored optimizer and EMA state
        torch.testing.assert_close(resumed.state_dict()[name], value, atol=1e-4, rtol=1e-3)


def test_whitening_scales_latents_without_changing_reconstructions() -> None:
    vae = tv.new_vae(TINY, 0).eval()
    with torch.no_grad():  # an untrained encoder's latents are far from N(0, 1): make them more so
        vae.quant_conv.bias[:4] += torch.tensor([3.0, -2.0, 0.5, 1.0])
        vae.quant_conv.weight[:4] *= 5
    images = tv.training_images(tv.VAESettings(batch_size=24), 0, TINY.image_size)
    with torch.no_grad():
        before = vae(images)
        stats = tv.whiten_latents(vae, TINY, seed=5, count=32)
        after = vae(images)
        latents = torch.cat([vae.encode_to_latent(chunk, sample=False) for chunk in images.split(8)])
    assert abs(stats["channel_mean"][0] - stats["channel_mean"][1]) > 1  # the shift was measured
    torch.testing.assert_close(after, before, atol=2e-3, rtol=1e-3)
    assert latents.mean(dim=(0, 2, 3)).abs().max() < 0.35
    assert (latents.std(dim=(0, 2, 3)) - 1).abs().max() < 0.35


def test_loss_weights_favour_high_noise_for_v_prediction() -> None:
    alphas = torch.tensor([0.9999, 0.5, 0.0047])  # low, middle and SD's highest noise level
    v = tu.loss_weights(alphas, "v_prediction", 5.0)
    eps = tu.loss_weights(alphas, "epsilon", 5.0)
    assert v[2] > 0.99 and v[0] < 0.001  # x0-error weight min(SNR, 5) + 1: full v loss at high noise
    assert eps[2] == pytest.approx(1.0) and eps[0] < 0.001
    generator = torch.Generator().manual_seed(0)
    t = tu.sample_timesteps(generator, 4000, tu.UNetSettings(high_noise_fraction=0.25, high_noise_start=700))
    assert int(t.min()) >= 0 and int(t.max()) <= 999
    assert (t >= 700).float().mean() == pytest.approx(0.3 + 0.25 * 0.7, abs=0.03)


def test_batches_are_deterministic_and_share_captions() -> None:
    pool = torch.randn(16, 4, 2, 2).half()
    from modules.training.latent_pool import pool_specs

    specs = pool_specs(0, 16)
    combos = tu.combination_index(specs)
    settings = tu.UNetSettings(batch_size=8, latents_per_caption=4, caption_dropout=0.0)
    latents, tokens, _ = tu.training_batch(pool, specs, combos, settings, step=3)
    again, tokens_again, _ = tu.training_batch(pool, specs, combos, settings, step=3)
    assert torch.equal(latents, again) and torch.equal(tokens, tokens_again)
    assert latents.shape == (8, 4, 2, 2) and tokens.shape == (2, 77)
    other, _, _ = tu.training_batch(pool, specs, combos, settings, step=4)
    assert not torch.equal(latents, other)


def test_captions_are_tokenised_as_the_pipeline_chunks_them() -> None:
    ids = caption_tokens("a red circle on a blue background, top left")
    assert len(ids) == 77 and ids[0] == 49406 and ids[-1] == 49407
    assert ids[1:4] == (320, 736, 7117)  # "a red circle"
    assert set(ids[12:]) == {49407}  # end-token padding, as SD1's conditioning pads
    assert caption_tokens("") == (49406, *[49407] * 76)
    assert set(ids) <= set(caption_vocabulary())


def test_untrained_text_side_conditions_the_pipeline_without_nan() -> None:
    """The anchored final-norm bias keeps the chunk mean that "Original" emphasis divides by far from zero."""
    model = tu.DemoDiffusion(TINY, 0)
    pipeline = TextConditioner(SimpleNamespace(family="sd1", text_encoders={"clip_l": model.text.merged()}))
    with torch.no_grad():
        plain = pipeline.get_learned_conditioning(["a red circle on a blue background, top left"])
        emphasised = pipeline.get_learned_conditioning(["a (red:1.5) circle on a blue background, top left"])
    assert torch.isfinite(plain).all() and torch.isfinite(emphasised).all()
    assert plain.mean().item() == pytest.approx(tu.FINAL_NORM_BIAS, abs=0.05)
    assert not torch.equal(plain, emphasised)
    assert "text.encoder.transformer.text_model.final_layer_norm.bias" not in dict(tu.trainable_named_parameters(model))


def test_unet_phase_trains_with_ema_and_matches_pipeline_conditioning(tmp_path: Path) -> None:
    config: DemoModelConfig = TINY
    vae = tv.new_vae(config, 0).eval().requires_grad_(False)
    model, info = tu.train_unet(config, vae, tmp_path, 600, settings=UNET_SETTINGS, max_steps=3, show_bar=False)
    assert info["steps"] == 3 and info["final_loss"] == pytest.approx(info["final_loss"])  # not NaN
    assert (tmp_path / CACHE_NAME).is_file() and (tmp_path / tu.CHECKPOINT_NAME).is_file()
    saved = torch.load(tmp_path / tu.CHECKPOINT_NAME, weights_only=True)
    names = [name for name, _ in tu.trainable_named_parameters(model)]
    ema_rows = saved["ema"][names.index("text.rows")]
    assert not torch.equal(saved["model"]["text.rows"], ema_rows)  # the average lags the live weights
    assert torch.equal(model.text.rows, ema_rows)  # and the returned model carries the average
    caption = "a green star on a black background, center"
    with torch.no_grad():
        ours = model.text(torch.tensor([caption_tokens(caption), caption_tokens("")]))
        pipeline = TextConditioner(SimpleNamespace(family="sd1", text_encoders={"clip_l": model.text.merged()}))
        theirs = pipeline.get_learned_conditioning([caption, ""])
    torch.testing.assert_close(ours, theirs)
