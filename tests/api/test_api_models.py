"""The model-side routes and request features over real HTTP, with the app's own ``ModelCache`` + ``model_getter``:
the ``sd_vae`` setting (external file, "None", "Automatic" with a file beside the checkpoint), per-job
``override_settings`` for checkpoint and VAE, ``infotext``, embeddings, prompt styles and unload/reload."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from modules.infotext import parse_generation_parameters
from modules.sd.checkpoint import read_state_dict
from tests.api.server import TINY, Served, assert_error, decode, pixels, serve_with_cache
from tests.sd.factory import write_tiny_checkpoint


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("api-models")
    ckpt_dir = tmp / "checkpoints"
    ckpt_dir.mkdir()
    write_tiny_checkpoint("sd1", ckpt_dir, name="alpha", seed=0)
    write_tiny_checkpoint("sd1", ckpt_dir, name="beta", seed=1)
    served = serve_with_cache(tmp / "data", ckpt_dir)
    yield served
    served.stop()
    torch.set_num_threads(threads)


@pytest.fixture
def fresh(api: Served) -> Iterator[Served]:
    """Default model settings before and after each test."""
    for key in ("sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers"):
        api.ctx.opts.set(key, api.ctx.opts.get_default(key))
    yield api
    for key in ("sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers"):
        api.ctx.opts.set(key, api.ctx.opts.get_default(key))


def image_and_params(api: Served, **fields) -> tuple[np.ndarray, dict]:
    body = api.txt2img(**fields)
    return pixels(body["images"][0]), parse_generation_parameters(decode(body["images"][0]).info["parameters"])


def write_perturbed_vae(api: Served, target: Path) -> Path:
    """alpha's own VAE with every weight nudged, in the standalone key layout."""
    checkpoint = next(c for c in api.ctx.checkpoints.values() if c.model_name == "alpha").filename
    prefix = "first_stage_model."
    own = {k[len(prefix):]: v for k, v in read_state_dict(checkpoint).items() if k.startswith(prefix)}
    g = torch.Generator().manual_seed(7)
    save_file({k: (v + torch.randn(v.shape, generator=g) * 0.2).contiguous() for k, v in own.items()}, str(target))
    return target


def test_vae_setting_changes_the_decode_and_none_restores_it(fresh: Served) -> None:
    api = fresh
    original, params = image_and_params(api)
    assert "VAE" not in params and params["Model"] == "alpha"
    vae_dir = api.ctx.paths.vae_dirs[0]
    path = write_perturbed_vae(api, vae_dir / "alt.safetensors")
    assert api.get("sd-vae").json() == [{"model_name": "alt.safetensors", "filename": str(path)}]
    assert api.post("refresh-vae").status_code == 200

    assert api.post("options", json={"sd_vae": "alt.safetensors"}).status_code == 200
    assert api.get("options").json()["sd_vae"] == "alt.safetensors"
    changed, params = image_and_params(api)
    assert not np.array_equal(changed, original)
    assert params["VAE"] == "alt.safetensors" and len(params["VAE hash"]) == 10

    assert api.post("options", json={"sd_vae": "None"}).status_code == 200
    restored, params = image_and_params(api)
    assert np.array_equal(restored, original) and "VAE" not in params
    assert_error(api.post("options", json={"sd_vae": "missing.pt"}), 422, "missing.pt", "alt.safetensors")

    # Per job: the override decodes with alt, the next job is back to the setting ("None").
    once, params = image_and_params(api, override_settings={"sd_vae": "alt.safetensors"})
    assert np.array_equal(once, changed) and params["VAE"] == "alt.safetensors"
    assert np.array_equal(image_and_params(api)[0], original)
    assert api.ctx.opts.sd_vae == "None"

    # "Automatic": a VAE named like the checkpoint beside it wins; without one the checkpoint's own VAE.
    sidecar = Path(next(c for c in api.ctx.checkpoints.values() if c.model_name == "alpha").filename)
    sidecar = sidecar.with_name("alpha.vae.safetensors")
    os.link(path, sidecar)
    try:
        api.ctx.opts.set("sd_vae", "Automatic")
        auto, params = image_and_params(api)
        assert np.array_equal(auto, changed) and params["VAE"] == "alpha.vae.safetensors"
        assert "alpha.vae" not in str(api.get("sd-models").json())  # not listed as a checkpoint
    finally:
        sidecar.unlink()
    assert np.array_equal(image_and_params(api)[0], original)


def test_checkpoint_override_for_one_job_and_kept_when_asked(fresh: Served) -> None:
    api = fresh
    original, _ = image_and_params(api)
    other, params = image_and_params(api, override_settings={"sd_model_checkpoint": "beta"})
    assert params["Model"] == "beta" and not np.array_equal(other, original)
    again, params = image_and_params(api)
    assert params["Model"] == "alpha" and np.array_equal(again, original)
    assert api.ctx.opts.sd_model_checkpoint == ""

    image_and_params(api, override_settings={"sd_model_checkpoint": "beta"},
                     override_settings_restore_afterwards=False)
    assert api.ctx.opts.sd_model_checkpoint.startswith("beta.safetensors")
    assert api.ctx.model_cache.info.model_name == "beta"


def test_infotext_fills_the_fields_the_request_did_not_set(fresh: Served) -> None:
    api = fresh
    _, beta = image_and_params(api, override_settings={"sd_model_checkpoint": "beta"})
    text = ("a blue sphere\nNegative prompt: ugly\nSteps: 3, Sampler: Euler a, Schedule type: Karras, CFG scale: 4, "
            f"Seed: 77, Size: 40x32, Model hash: {beta['Model hash']}, Model: not-installed, Clip skip: 2")
    response = api.post("txt2img", json={"infotext": text, "steps": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    params = parse_generation_parameters(decode(body["images"][0]).info["parameters"])
    assert params["Prompt"] == "a blue sphere" and params["Negative prompt"] == "ugly"
    assert params["Steps"] == "2"  # set by the request: the infotext does not win
    assert (params["Seed"], params["Size-1"], params["Size-2"]) == ("77", "40", "32")
    assert (params["Sampler"], params["Schedule type"], params["CFG scale"]) == ("Euler a", "Karras", "4.0")
    assert params["Clip skip"] == "2" and params["Model"] == "beta"
    assert body["parameters"]["seed"] == 77 and body["parameters"]["override_settings"]["CLIP_stop_at_last_layers"] == 2
    assert api.ctx.opts.CLIP_stop_at_last_layers == 1 and api.ctx.opts.sd_model_checkpoint == ""
    # An explicit override beats the infotext's.
    explicit = api.post("txt2img", json={"infotext": text, "steps": 2, "override_settings": {
        "CLIP_stop_at_last_layers": 1, "sd_model_checkpoint": "alpha"}}).json()
    params = parse_generation_parameters(decode(explicit["images"][0]).info["parameters"])
    assert params["Clip skip"] == "1" and params["Model"] == "alpha"


def test_embeddings_list_refresh_and_use(fresh: Served) -> None:
    api = fresh
    folder = api.ctx.paths.embeddings_dir
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"tinyemb": torch.randn(2, 128)}, str(folder / "tinyemb.safetensors"))
    torch.save({"string_to_param": {"*": torch.randn(1, 768)}, "step": 7, "sd_checkpoint": "abc",
                "sd_checkpoint_name": "old-model"}, folder / "wide.pt")
    body = api.get("embeddings").json()
    assert body["loaded"] == {"tinyemb": {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None,
                                          "shape": 128, "vectors": 2}}
    assert body["skipped"] == {"wide": {"step": 7, "sd_checkpoint": "abc", "sd_checkpoint_name": "old-model",
                                        "shape": 768, "vectors": 1}}
    _, params = image_and_params(api, prompt="a tinyemb cube")
    assert params["TI hashes"].startswith("tinyemb: ") and len(params["TI hashes"]) == len("tinyemb: ") + 12

    save_file({"later": torch.randn(1, 128)}, str(folder / "later.safetensors"))
    assert api.post("refresh-embeddings").status_code == 200
    assert set(api.get("embeddings").json()["loaded"]) == {"tinyemb", "later"}


def test_prompt_styles_from_the_styles_files(fresh: Served, tmp_path: Path) -> None:
    api = fresh
    api.ctx.paths.styles_file.write_text("name,prompt,negative_prompt\nCinema,\"{prompt}, film grain\",blurry\n"
                                         "Plain,sharp,\n", encoding="utf8")
    assert api.get("prompt-styles").json() == [
        {"name": "Cinema", "prompt": "{prompt}, film grain", "negative_prompt": "blurry"},
        {"name": "Plain", "prompt": "sharp", "negative_prompt": ""}]
    (tmp_path / "a.csv").write_text("name,prompt,negative_prompt\nPlain,soft,\n", encoding="utf8")
    (tmp_path / "b.csv").write_text("name,prompt,negative_prompt\nExtra,x,y\n", encoding="utf8")
    flags = api.ctx.args.styles_file
    api.ctx.args.styles_file = [str(api.ctx.paths.styles_file), str(tmp_path / "*.csv")]
    try:
        styles = {s["name"]: s["prompt"] for s in api.get("prompt-styles").json()}
    finally:
        api.ctx.args.styles_file = flags
    assert styles == {"Cinema": "{prompt}, film grain", "Plain": "soft", "Extra": "x"}


def test_unload_and_reload_checkpoint(fresh: Served) -> None:
    api = fresh
    image_and_params(api)
    assert api.ctx.model_cache.model is not None
    assert api.post("unload-checkpoint").status_code == 200
    assert api.ctx.model_cache.model is None
    assert api.post("reload-checkpoint").status_code == 200
    assert api.ctx.model_cache.model is not None and api.ctx.model_cache.info.model_name == "alpha"
    assert api.post("txt2img", json={**TINY, "send_images": False}).status_code == 200
