"""A trained toy demo model, exported, goes through the ordinary loader and pipeline with no special case."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch
from safetensors import safe_open

from modules.processing import StableDiffusionProcessingTxt2Img, process_images
from modules.sd import detection
from modules.sd.loader import load_model
from modules.sd.unet import UNetModel
from modules.training import train_unet as tu
from modules.training import train_vae as tv
from modules.training.demo_model_config import DEMO, TINY
from modules.training.export import checkpoint_state_dict, export_checkpoint

if TYPE_CHECKING:
    from tests.pipeline_fixtures import PipelineEnv

pytest_plugins = ["tests.pipeline_fixtures"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[tu.DemoDiffusion, torch.nn.Module]:
    """Two steps of each phase at toy sizes (enough to leave the zero-initialised outputs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    work = tmp_path_factory.mktemp("demo-work")
    vae_settings = tv.VAESettings(batch_size=2, whiten_count=16, quality_count=4)
    vae, _ = tv.train_vae(TINY, work, 600, settings=vae_settings, max_steps=2, show_bar=False)
    settings = tu.UNetSettings(batch_size=4, latents_per_caption=2, pool_size=8, lr=1e-2, warmup_steps=1)
    model, _ = tu.train_unet(TINY, vae, work, 600, settings=settings, max_steps=2, show_bar=False)
    torch.set_num_threads(threads)
    return model, vae


def test_export_loads_as_sd1_and_generates(trained: tuple, tmp_path: Path, pipeline_env: PipelineEnv) -> None:
    model, vae = trained
    path = export_checkpoint(tmp_path / "demo.safetensors", TINY, model.unet, vae, model.text.merged(),
                             metadata={"atelier.training": {"steps": 2}})
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
        assert f.metadata()["modelspec.prediction_type"] == "v_prediction"
        assert f.get_tensor("model.diffusion_model.out.2.weight").dtype == torch.float16
    assert "v_pred" in keys
    assert "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight" in keys
    assert {k.split(".")[0] for k in keys} == {"model", "first_stage_model", "cond_stage_model", "v_pred"}

    loaded = load_model(path)
    assert loaded.family == "sd1" and loaded.prediction_type == "v_prediction"
    assert loaded.config.unet == TINY.unet and loaded.config.vae == TINY.vae
    assert loaded.config.text_encoders[0].config == TINY.text
    torch.testing.assert_close(loaded.unet.state_dict()["out.2.weight"],
                               model.unet.state_dict()["out.2.weight"].half().float())

    p = pipeline_env.apply(StableDiffusionProcessingTxt2Img(
        sd_model=loaded, prompt="a red circle on a blue background, top left", seed=3, steps=3, width=64,
        height=64, cfg_scale=7.0, sampler_name="DPM++ 2M", do_not_save_samples=True, do_not_save_grid=True))
    processed = process_images(p)
    image = processed.images[0]
    assert image.size == (64, 64)
    assert np.asarray(image).std() > 0  # a picture, not a blank from NaNs replaced by zeros
    assert "Steps: 3" in processed.infotexts[0]


def test_export_refuses_weights_that_detection_reads_differently(trained: tuple, tmp_path: Path) -> None:
    model, vae = trained
    other_unet = UNetModel(replace(TINY.unet, channel_mult=(1, 1)))  # not what the config says
    target = tmp_path / "demo.safetensors"
    with pytest.raises(ValueError, match="would not load as trained: UNet"):
        export_checkpoint(target, TINY, other_unet, vae, model.text.merged())
    assert not target.exists() and not list(tmp_path.iterdir())


def test_full_size_demo_layout_is_detected_from_shapes() -> None:
    """The real demo sizes, built on the meta device (no memory, no weights): detection reads every size back."""
    with torch.device("meta"):
        model = tu.DemoDiffusion(DEMO, 0)
        vae = tv.AutoencoderKL(DEMO.vae)
    sd = checkpoint_state_dict(model.unet, vae, model.text.encoder, DEMO.prediction_type, torch.float16)
    found = detection.detect(sd)
    assert found.family == "sd1" and found.prediction_type == "v_prediction"
    assert found.unet == DEMO.unet and found.vae == DEMO.vae and found.text_encoders[0].config == DEMO.text
    megabytes = sum(t.numel() * t.element_size() for t in sd.values()) / 1e6
    assert megabytes < 50, megabytes
