"""Tests for the live preview: the cheap latent->RGB maps (modules/sd_vae_approx.py), the decoder choice
(modules/live_preview.py) and its wiring into sampling (modules/processing_steps.py, modules/shared_state.py).

Expected colours below are worked out by hand from the published factor tables (see sd_vae_approx's docstring):
``value = (sum_l latent[l] * factor[l][c] + bias[c] + 1) * 127.5``, truncated to an integer like A1111 does.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from modules import live_preview
from modules.processing import StableDiffusionProcessingTxt2Img, process_images
from modules.sd import taesd
from modules.sd_vae_approx import cheap_approximation, latent_to_rgb_preview

if TYPE_CHECKING:
    from tests.pipeline_fixtures import PipelineEnv

pytest_plugins = ["tests.pipeline_fixtures"]


def flat_latent(values: tuple[float, ...], height: int = 2, width: int = 3) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1).expand(1, len(values), height, width)


def colour(image: Image.Image, xy: tuple[int, int] = (0, 0)) -> np.ndarray:
    return np.asarray(image.getpixel(xy), dtype=np.int16)


def assert_colour(image: Image.Image, expected: tuple[int, int, int], xy: tuple[int, int] = (0, 0)) -> None:
    """Within one level: the hand computation is exact, float32 may land a hair below an integer."""
    assert np.abs(colour(image, xy) - np.asarray(expected)).max() <= 1, (colour(image, xy), expected)


# --- Approx cheap ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("family", "latent", "expected"), [
    # SD1: R = 0.298 - 0.187 + 0.158 = 0.269, G = 0.207 - 0.286 - 0.189 = -0.268, B = 0.208 - 0.173 - 0.264 = -0.229
    ("sd1", (1.0, -1.0, -1.0, 0.0), (161, 93, 98)),
    # SD1: channel 4 is (negative) brightness: 2 * (-0.184, -0.271, -0.473) -> (80.58, 58.39, 6.88)
    ("sd1", (0.0, 0.0, 0.0, 2.0), (80, 58, 6)),
    ("sd2", (0.0, 0.0, 0.0, 0.0), (127, 127, 127)),  # SD2 shares SD1's VAE and map; no bias: mid grey
    # SDXL: channel 1 is luma: 2 * (0.3651, 0.4232, 0.4341) + bias (0.1084, -0.0175, -0.0011) -> near white
    ("sdxl", (2.0, 0.0, 0.0, 0.0), (234, 233, 238)),
    # SDXL: low channel 2 is red: -2 * (-0.2533, -0.0042, 0.1068) + bias -> (0.6150, -0.0091, -0.2147)
    ("sdxl", (0.0, -2.0, 0.0, 0.0), (205, 126, 100)),
    ("sdxl_refiner", (0.0, 0.0, 0.0, 0.0), (141, 125, 127)),  # the bias alone: the refiner shares SDXL's VAE
])
def test_cheap_map_gives_the_hand_computed_colours(family: str, latent: tuple[float, ...],
                                                   expected: tuple[int, int, int]) -> None:
    image = latent_to_rgb_preview(flat_latent(latent), family)
    assert image.mode == "RGB" and image.size == (3, 2)
    assert_colour(image, expected)
    assert len(set(image.getdata())) == 1


def test_cheap_map_keeps_the_layout_and_previews_the_first_image_only() -> None:
    red, dark = (1.0, -1.0, -1.0, 0.0), (0.0, 0.0, 0.0, 2.0)
    first = torch.cat([flat_latent(red, 6, 5), flat_latent(dark, 6, 5)], dim=3)  # red left half, dark right half
    batch = torch.cat([first, flat_latent((0.0, 0.0, 0.0, -3.0), 6, 10)])
    image = latent_to_rgb_preview(batch, "sd1")
    assert image.size == (10, 6)  # width x height: one pixel per latent cell
    assert_colour(image, (161, 93, 98), (0, 5))
    assert_colour(image, (80, 58, 6), (9, 0))
    values = cheap_approximation(batch[0], "sd1")
    assert values.shape == (3, 6, 10) and values[0, 0, 0].item() == pytest.approx(0.269, abs=1e-6)


def test_cheap_map_clamps_and_rejects_other_latent_spaces() -> None:
    assert_colour(latent_to_rgb_preview(flat_latent((9.0, 9.0, 9.0, -9.0)), "sd1"), (255, 255, 255))
    with pytest.raises(ValueError, match="takes 4 latent channels, got 16"):
        latent_to_rgb_preview(torch.zeros(1, 16, 2, 2), "sd1")


def test_cheap_map_takes_under_2_ms_for_a_64x64_latent() -> None:
    latent = torch.randn(2, 4, 64, 64)
    for _ in range(5):
        latent_to_rgb_preview(latent)
    timings = []
    for _ in range(40):
        start = time.perf_counter()
        image = latent_to_rgb_preview(latent)
        timings.append(time.perf_counter() - start)
    assert image.size == (64, 64)
    assert statistics.median(timings) < 0.002, f"median {statistics.median(timings) * 1000:.2f} ms"


# --- choosing a decoder --------------------------------------------------------------------------------------------

class Opts:
    def __init__(self, **values: Any) -> None:
        self.live_previews_enable = True
        self.show_progress_type = "Approx cheap"
        self.__dict__.update(values)


class ModelsDir:
    """The part of modules.paths.Paths the preview needs."""

    def __init__(self, root: Path) -> None:
        self.models_dir = root

    def model_dir(self, kind: str) -> Path:
        return self.models_dir / kind


def write_random_taesd(folder: Path, name: str = "taesd_decoder.safetensors", seed: int = 0) -> torch.nn.Module:
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    decoder = taesd.tiny_decoder().eval()
    weights = {k: v.contiguous() for k, v in decoder.state_dict().items()}
    torch.save(weights, folder / name) if name.endswith(".pth") else save_file(weights, str(folder / name))
    return decoder


@pytest.fixture
def fresh_log_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_preview, "_said", set())


def test_disabled_previews_have_no_decoder(tiny_sd1: Any) -> None:
    assert live_preview.preview_decoder_for(tiny_sd1, Opts(live_previews_enable=False), None) is None


def test_taesd_decoder_from_the_models_folder(tmp_path: Path, tiny_sd1: Any, tiny_sdxl: Any,
                                              fresh_log_once: None) -> None:
    reference = write_random_taesd(tmp_path / "VAE-approx")
    write_random_taesd(tmp_path / "VAE-approx", "taesdxl_decoder.pth", seed=1)
    paths = ModelsDir(tmp_path)
    latent = torch.randn(2, 4, 4, 5)
    decoder = live_preview.preview_decoder_for(tiny_sd1, Opts(show_progress_type="TAESD"), paths)
    image = decoder(latent)
    assert image.size == (40, 32)  # TAESD always upscales 8x
    with torch.no_grad():
        expected = ((reference(latent[:1])[0].clamp(0, 1) * 255).to(torch.uint8)).permute(1, 2, 0).numpy()
    assert np.abs(np.asarray(image, dtype=np.int16) - expected).max() <= 1
    sdxl_image = live_preview.preview_decoder_for(tiny_sdxl, Opts(show_progress_type="TAESD"), paths)(latent)
    assert sdxl_image.size == (40, 32) and sdxl_image.tobytes() != image.tobytes()  # taesdxl's own weights


def test_missing_taesd_and_approx_nn_fall_back_to_cheap_and_say_why_once(
        tmp_path: Path, tiny_sd1: Any, caplog: pytest.LogCaptureFixture, fresh_log_once: None) -> None:
    latent = torch.randn(1, 4, 4, 5)
    cheap = latent_to_rgb_preview(latent, "sd1")
    with caplog.at_level(logging.WARNING, logger="modules.live_preview"):
        for _ in range(2):
            for kind in ("TAESD", "Approx NN", "Nonsense"):
                decoder = live_preview.preview_decoder_for(tiny_sd1, Opts(show_progress_type=kind), ModelsDir(tmp_path))
                assert decoder(latent).tobytes() == cheap.tobytes()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3
    assert "taesd_decoder.safetensors or .pth in " + str(tmp_path / "VAE-approx") in messages[0]
    assert "'Approx NN'" in messages[1] and "'Nonsense'" in messages[2]


def test_unreadable_taesd_file_falls_back(tmp_path: Path, tiny_sd1: Any, caplog: pytest.LogCaptureFixture,
                                          fresh_log_once: None) -> None:
    (tmp_path / "VAE-approx").mkdir()
    (tmp_path / "VAE-approx" / "taesd_decoder.pth").write_bytes(b"not a checkpoint")
    with caplog.at_level(logging.WARNING, logger="modules.live_preview"):
        decoder = live_preview.preview_decoder_for(tiny_sd1, Opts(show_progress_type="TAESD"), ModelsDir(tmp_path))
    assert decoder(torch.zeros(1, 4, 3, 3)).size == (3, 3)
    assert "could not load taesd_decoder.pth" in caplog.text


# --- during generation ---------------------------------------------------------------------------------------------

def txt2img(env: PipelineEnv, model: Any, **kwargs: Any) -> StableDiffusionProcessingTxt2Img:
    params = {"prompt": "a red cube", "seed": 3, "steps": 6, "width": 32, "height": 32, "sampler_name": "Euler",
              "cfg_scale": 5.0, "do_not_save_samples": True, "do_not_save_grid": True}
    params.update(kwargs)
    return env.apply(StableDiffusionProcessingTxt2Img(sd_model=model, **params))


def record_previews(monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple[int, ...], Image.Image]]:
    """Wrap whatever decoder the settings choose, recording (latent shape, preview) per call."""
    calls: list[tuple[tuple[int, ...], Image.Image]] = []
    choose = live_preview.preview_decoder_for

    def recording_choice(model: Any, opts: Any, paths: Any = None):
        decoder = choose(model, opts, paths)
        if decoder is None:
            return None

        def recorded(latent: torch.Tensor) -> Image.Image:
            image = decoder(latent)
            calls.append((tuple(latent.shape), image))
            return image

        return recorded

    monkeypatch.setattr(live_preview, "preview_decoder_for", recording_choice)
    return calls


def test_cheap_previews_during_generation(pipeline_env: PipelineEnv, tiny_sd1: Any,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    calls = record_previews(monkeypatch)
    state = pipeline_env.state
    pipeline_env.opts.set("show_progress_every_n_steps", 2)
    state.begin("txt2img")
    ids_seen: list[int] = []
    state_assign = state.assign_current_image
    monkeypatch.setattr(state, "assign_current_image",
                        lambda image: (state_assign(image), ids_seen.append(state.id_live_preview)))
    result = process_images(txt2img(pipeline_env, tiny_sd1, batch_size=2))
    assert len(result.images) == 2
    assert len(calls) >= 2 and state.id_live_preview == len(calls) and ids_seen == list(range(1, len(calls) + 1))
    assert all(shape == (2, 4, 16, 16) for shape, _ in calls)  # the denoiser hands over the batch ...
    image = state.current_image
    assert isinstance(image, Image.Image) and image.size == (16, 16)  # ... the preview shows one latent-sized image
    assert image is calls[-1][1]
    assert image.tobytes() == latent_to_rgb_preview(state.current_latent[:1], "sd1").tobytes()
    assert len({preview.tobytes() for _, preview in calls}) == len(calls)  # the picture changes as sampling goes on


def test_full_vae_preview_has_the_output_size(pipeline_env: PipelineEnv, tiny_sd1: Any) -> None:
    state = pipeline_env.state
    pipeline_env.opts.set("show_progress_type", "Full")
    pipeline_env.opts.set("show_progress_every_n_steps", 2)
    state.begin("txt2img")
    process_images(txt2img(pipeline_env, tiny_sd1, steps=4))
    image = state.current_image
    assert isinstance(image, Image.Image) and image.size == (32, 32) and state.id_live_preview >= 2
    with torch.no_grad():
        decoded = tiny_sd1.vae.decode_latent(state.current_latent[:1])[0]
    expected = ((decoded.clamp(-1, 1) + 1) * 127.5).to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.abs(np.asarray(image, dtype=np.int16) - expected).max() <= 1


def test_taesd_preview_during_generation(pipeline_env: PipelineEnv, tiny_sd1: Any, tmp_path: Path) -> None:
    write_random_taesd(tmp_path / "models" / "VAE-approx")
    pipeline_env.models_dir = tmp_path / "models"  # what Paths carries; p.paths is the test environment
    pipeline_env.opts.set("show_progress_type", "TAESD")
    pipeline_env.opts.set("show_progress_every_n_steps", 3)
    pipeline_env.state.begin("txt2img")
    process_images(txt2img(pipeline_env, tiny_sd1, steps=3))
    assert pipeline_env.state.current_image.size == (128, 128) and pipeline_env.state.id_live_preview >= 1


def test_disabled_setting_means_no_preview(pipeline_env: PipelineEnv, tiny_sd1: Any) -> None:
    state = pipeline_env.state
    pipeline_env.opts.set("live_previews_enable", False)
    state.begin("txt2img")
    process_images(txt2img(pipeline_env, tiny_sd1, steps=2))
    assert state.preview_decoder is None and state.current_image is None and state.id_live_preview == 0


def test_a_failing_preview_never_breaks_generation(pipeline_env: PipelineEnv, tiny_sd1: Any,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    state = pipeline_env.state

    def broken_decoder(latent: torch.Tensor) -> Image.Image:
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(live_preview, "preview_decoder_for", lambda *a: 1 / 0)
    state.begin("txt2img")
    with caplog.at_level(logging.WARNING):
        assert len(process_images(txt2img(pipeline_env, tiny_sd1, steps=2)).images) == 1
    assert state.current_image is None and "Live preview disabled for this run: ZeroDivisionError" in caplog.text
    monkeypatch.setattr(live_preview, "preview_decoder_for", lambda *a: broken_decoder)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert len(process_images(txt2img(pipeline_env, tiny_sd1, steps=2)).images) == 1
    assert state.current_image is None and state.id_live_preview == 0
    assert caplog.text.count("decoder exploded") == 1  # said once per job, not once per step


def test_a_decoder_set_by_hand_is_kept_and_settings_apply_on_the_next_run(pipeline_env: PipelineEnv,
                                                                           tiny_sd1: Any) -> None:
    state = pipeline_env.state
    state.preview_decoder = lambda latent: "mine"
    process_images(txt2img(pipeline_env, tiny_sd1, steps=2))
    assert state.current_image == "mine"
    state.preview_decoder = None
    process_images(txt2img(pipeline_env, tiny_sd1, steps=2))
    assert isinstance(state.current_image, Image.Image) and state.current_image.size == (16, 16)
    pipeline_env.opts.set("show_progress_type", "Full")
    process_images(txt2img(pipeline_env, tiny_sd1, steps=2))
    assert state.current_image.size == (32, 32)  # the installed decoder is replaced when the setting changes
    state.end()
    assert state.preview_decoder is None  # the "Full" decoder holds the model's VAE: dropped when the job ends
    state.preview_decoder = mine = lambda latent: "mine"
    state.end()
    assert state.preview_decoder is mine
