"""``/sdapi/v1`` over real HTTP: uvicorn on a free local port, a tiny SD1 checkpoint, ``requests`` as the client."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from modules.infotext import parse_generation_parameters
from tests.api.server import TINY, Served, assert_error, b64_png, serve, serving_on_one_thread

pytest_plugins = ["tests.pipeline_fixtures"]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, tiny_sd1: Any, tiny_checkpoint_dir: Path) -> Iterator[Served]:
    with serving_on_one_thread(tmp_path_factory.mktemp("api"), tiny_sd1, tiny_checkpoint_dir) as served:
        yield served


def test_txt2img_returns_png_with_parseable_parameters(api: Served) -> None:
    response = api.post("txt2img", json={**TINY, "sampler_name": "DPM++ 2M Karras"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"images", "parameters", "info"} and len(body["images"]) == 1
    image = Image.open(io.BytesIO(base64.b64decode(body["images"][0])))
    assert image.format == "PNG" and image.size == (32, 32)
    params = parse_generation_parameters(image.info["parameters"])
    assert params["Prompt"] == "a red cube" and params["Steps"] == "2" and params["Seed"] == "5"
    assert params["Sampler"] == "DPM++ 2M" and params["Schedule type"] == "Karras"
    assert body["parameters"]["sampler_index"] == "Euler" and body["parameters"]["send_images"] is True
    info = json.loads(body["info"])
    assert info["seed"] == 5 and info["width"] == 32 and info["all_seeds"] == [5]

    again = api.post("png-info", json={"image": body["images"][0]})
    assert again.status_code == 200, again.text
    assert again.json()["info"] == image.info["parameters"]
    assert again.json()["parameters"]["Seed"] == "5"


def test_img2img_and_send_images_false(api: Served) -> None:
    init = b64_png(Image.new("RGB", (32, 32), (200, 30, 30)))
    response = api.post("img2img", json={**TINY, "init_images": [f"data:image/png;base64,{init}"],
                                         "denoising_strength": 0.5})
    assert response.status_code == 200, response.text
    assert "init_images" not in response.json()["parameters"]
    assert Image.open(io.BytesIO(base64.b64decode(response.json()["images"][0]))).size == (32, 32)
    quiet = api.post("txt2img", json={**TINY, "send_images": False})
    assert quiet.status_code == 200 and quiet.json()["images"] == []


def test_bad_requests_are_clear_4xx_and_server_stays_healthy(api: Served) -> None:
    """A series of bad requests, each a clear 4xx naming the problem; afterwards generation still works."""
    not_image = base64.b64encode(b"hello").decode()
    assert_error(api.post("png-info", json={"image": "not base64!!"}), 422, "base64")
    assert_error(api.post("png-info", json={"image": not_image}), 422, "not an image")
    assert_error(api.post("img2img", json={**TINY, "init_images": ["%%%"]}), 422, "init_images[0]")
    assert_error(api.post("img2img", json={**TINY, "init_images": [not_image]}), 422, "not an image")
    assert_error(api.post("txt2img", json={**TINY, "width": 33}), 422, "multiples of 8")
    assert_error(api.post("txt2img", json={**TINY, "width": 4096, "height": 4096}), 422, "api_max_pixels")
    assert_error(api.post("txt2img", json={**TINY, "steps": 10_000}), 422, "steps")
    assert_error(api.post("txt2img", json={**TINY, "batch_size": 99}), 422, "batch_size")
    body = assert_error(api.post("txt2img", json={**TINY, "sampler_name": "Nope"}), 422, "unknown sampler")
    assert "DPM++ 2M" in body["detail"]
    assert_error(api.post("txt2img", json={**TINY, "scheduler": "Nope"}), 422, "Karras")
    assert_error(api.post("txt2img", json={**TINY, "script_name": "x/y/z plot"}), 422, "x/y/z plot")
    assert_error(api.post("txt2img", json={**TINY, "alwayson_scripts": {"ControlNet": {"args": []}}}), 422,
                 "ControlNet")
    assert_error(api.post("txt2img", json={**TINY, "steps": "many"}), 422, "steps")
    assert_error(api.post("txt2img", json={**TINY, "prompt": {"not": "a string"}}), 422, "prompt")
    assert_error(api.post("txt2img", data="{not json", headers={"Content-Type": "application/json"}), 422)
    assert_error(api.post("txt2img", json={**TINY, "override_settings": {"no_such": 1}}), 422, "no_such")
    assert_error(api.post("txt2img", json={**TINY, "override_settings": {"sd_model_checkpoint": "nothing-like"}}),
                 404, "checkpoint not found")
    assert_error(api.post("txt2img", json={**TINY, "override_settings": {"sd_vae": "nope.pt"}}), 422, "nope.pt",
                 "Automatic")
    assert_error(api.post("txt2img", json={**TINY, "infotext": "x\nSteps: lots, Seed: 1, Size: 32x32"}), 422,
                 "Steps")
    assert_error(api.post("extra-single-image", json={"image": "%%%", "upscaler_1": "Lanczos"}), 422, "base64")
    assert_error(api.post("extra-single-image", json={"image": not_image}), 422, "not an image")
    assert_error(api.post("extra-single-image", json={"image": b64_png(Image.new("RGB", (8, 8))),
                                                      "upscaler_1": "4x-Missing"}), 422, "4x-Missing", "Lanczos")
    assert_error(api.post("extra-single-image", json={"image": b64_png(Image.new("RGB", (8, 8))),
                                                      "upscaling_resize": "big"}), 422, "upscaling_resize")
    assert_error(api.post("extra-batch-images", json={"imageList": [{"data": not_image, "name": "a.png"}]}), 422,
                 "a.png")
    assert_error(api.post("unload-checkpoint"), 409, "model cache")
    ok = api.post("txt2img", json={**TINY, "send_images": False})
    assert ok.status_code == 200, ok.text
    assert api.ctx.queue.pending_count() == 0


def test_progress_interrupt_and_skip(api: Served) -> None:
    body = api.get("progress", params={"skip_current_image": "true"}).json()
    assert set(body) == {"progress", "eta_relative", "state", "current_image", "textinfo"}
    assert body["progress"] == 0 and body["current_image"] is None
    assert {"skipped", "interrupted", "job", "job_count", "job_no", "sampling_step", "sampling_steps"} <= set(
        body["state"])
    assert api.post("interrupt").status_code == 200
    assert api.post("skip").status_code == 200


def test_sampler_scheduler_and_other_lists(api: Served) -> None:
    samplers = {s["name"]: s for s in api.get("samplers").json()}
    assert set(samplers["DPM++ 2M"]) == {"name", "aliases", "options"}
    assert "Euler" in samplers and "Euler a" in samplers
    schedulers = {s["label"]: s for s in api.get("schedulers").json()}
    assert schedulers["Karras"] == {"name": "karras", "label": "Karras", "aliases": None, "default_rho": 7.0,
                                    "need_inner_model": False}
    assert {"name": "Latent"} in api.get("latent-upscale-modes").json()
    upscalers = api.get("upscalers").json()
    assert upscalers and set(upscalers[0]) == {"name", "model_name", "model_path", "model_url", "scale"}
    assert api.post("refresh-checkpoints").status_code == 200
    models = api.get("sd-models").json()
    assert any(m["model_name"] == "tiny-sd1" for m in models)
    assert set(models[0]) == {"title", "model_name", "hash", "sha256", "filename", "config"}
    flags = api.get("cmd-flags").json()
    assert flags["api_auth"] is None and "data_dir" in flags
    memory = api.get("memory").json()
    assert memory["ram"]["total"] > 0 and "cuda" in memory


def test_options_get_and_post(api: Served) -> None:
    options = api.get("options").json()
    assert options["samples_format"] == "png" and options["api_max_steps"] == 150
    assert api.post("options", json={"jpeg_quality": 90}).status_code == 200
    assert api.get("options").json()["jpeg_quality"] == 90
    assert api.ctx.paths.settings_file.exists()
    assert_error(api.post("options", json={"jpeg_quality": "very high"}), 422, "jpeg_quality")
    assert_error(api.post("options", json={"no_such_setting": 1}), 422, "no_such_setting")
    assert_error(api.post("options", json={"api_enable_requests": False}), 422, "cannot be changed")
    assert_error(api.post("options", json={"sd_model_checkpoint": "nothing-like-this"}), 404, "not found")
    assert api.get("options").json()["jpeg_quality"] == 90


def test_api_auth(tmp_path: Path, tiny_sd1: Any, tiny_checkpoint_dir: Path) -> None:
    served = serve(tmp_path, tiny_sd1, tiny_checkpoint_dir, "--api-auth", "alice:secret,bob:pw")
    try:
        denied = served.get("samplers")
        assert denied.status_code == 401 and denied.headers.get("WWW-Authenticate", "").startswith("Basic")
        assert_error(denied, 401, "username or password")
        assert served.get("samplers", auth=("alice", "wrong")).status_code == 401
        assert served.post("txt2img", json=TINY).status_code == 401
        assert served.get("samplers", auth=("alice", "secret")).status_code == 200
        assert served.get("options", auth=("bob", "pw")).status_code == 200
    finally:
        served.stop()


def test_docs_and_openapi_list_every_route(api: Served) -> None:
    schema = requests.get(f"{api.url}/openapi.json", timeout=30)
    assert schema.status_code == 200, schema.text
    listed = {path: set(methods) for path, methods in schema.json()["paths"].items()}
    expected = {
        "txt2img": "post", "img2img": "post", "extra-single-image": "post", "extra-batch-images": "post",
        "png-info": "post", "progress": "get", "interrupt": "post", "skip": "post", "options": "get",
        "cmd-flags": "get", "samplers": "get", "schedulers": "get", "upscalers": "get",
        "latent-upscale-modes": "get", "sd-models": "get", "sd-vae": "get", "embeddings": "get",
        "prompt-styles": "get", "refresh-checkpoints": "post", "refresh-vae": "post", "refresh-embeddings": "post",
        "memory": "get", "unload-checkpoint": "post", "reload-checkpoint": "post", "scripts": "get",
        "script-info": "get", "extensions": "get",
    }
    for route, method in expected.items():
        assert method in listed.get(f"/sdapi/v1/{route}", set()), route
    assert "post" in listed["/sdapi/v1/options"]
    assert {"infotext", "override_settings", "init_images"} <= set(
        schema.json()["components"]["schemas"]["StableDiffusionImg2ImgProcessingAPI"]["properties"])
    docs = requests.get(f"{api.url}/docs", timeout=30)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_concurrent_txt2img_requests_match_the_same_seed_alone(api: Served) -> None:
    """8 clients at once: every answer arrives, and each image equals that seed generated alone afterwards."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.api.server import pixels

    def generate(seed: int) -> str:
        response = api.post("txt2img", json={**TINY, "seed": seed})
        assert response.status_code == 200, response.text
        return response.json()["images"][0]

    with ThreadPoolExecutor(max_workers=8) as pool:
        together = dict(zip(range(1, 9), pool.map(generate, range(1, 9)), strict=True))
    assert len(together) == 8
    distinct = {pixels(b64).tobytes() for b64 in together.values()}
    assert len(distinct) == 8  # different seeds, different images
    for seed, b64 in together.items():
        alone = generate(seed)
        assert (pixels(b64) == pixels(alone)).all(), f"seed {seed} differs when run concurrently"
