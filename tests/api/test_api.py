"""``/sdapi/v1`` over real HTTP: uvicorn on a free local port, a tiny SD1 checkpoint, ``requests`` as the client."""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import torch
import uvicorn
from fastapi import FastAPI
from PIL import Image

from modules.api.api import Api, ApiContext
from modules.cmd_args import parse_args
from modules.infotext import parse_generation_parameters
from modules.jobs import JobQueue
from modules.options import Options
from modules.paths import paths_from_args
from modules.shared_options import options_templates
from tests.conftest import free_port

pytest_plugins = ["tests.pipeline_fixtures"]

TINY = {"prompt": "a red cube", "negative_prompt": "blurry", "seed": 5, "steps": 2, "width": 32, "height": 32,
        "cfg_scale": 5.0}


class Served:
    """A running server: its base URL, the context behind it and a way to stop it."""

    def __init__(self, ctx: ApiContext, url: str, server: uvicorn.Server, thread: threading.Thread) -> None:
        self.ctx, self.url, self.server, self.thread = ctx, url, server, thread

    def post(self, route: str, **kwargs: Any) -> requests.Response:
        return requests.post(f"{self.url}/sdapi/v1/{route}", timeout=60, **kwargs)

    def get(self, route: str, **kwargs: Any) -> requests.Response:
        return requests.get(f"{self.url}/sdapi/v1/{route}", timeout=60, **kwargs)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.ctx.queue.shutdown(10)


def serve(tmp: Path, model: Any, ckpt_dir: Path, *flags: str) -> Served:
    args = parse_args(["--data-dir", str(tmp), "--ckpt-dir", str(ckpt_dir), *flags], environ={})
    paths = paths_from_args(args)
    opts = Options(options_templates)
    ctx = ApiContext(opts=opts, paths=paths, args=args, queue=JobQueue(), get_model=lambda: model)
    ctx.refresh_checkpoints()
    app = FastAPI()
    Api(app, ctx)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    return Served(ctx, f"http://127.0.0.1:{port}", server, thread)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, tiny_sd1: Any, tiny_checkpoint_dir: Path) -> Iterator[Served]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    served = serve(tmp_path_factory.mktemp("api"), tiny_sd1, tiny_checkpoint_dir)
    yield served
    served.stop()
    torch.set_num_threads(threads)


def b64_png(image: Image.Image, text: str | None = None) -> str:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    if text:
        info.add_text("parameters", text)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def assert_error(response: requests.Response, status: int, *words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert {"error", "detail", "hint"} <= set(body)
    for word in words:
        assert word.lower() in body["detail"].lower(), body
    return body


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
    info = __import__("json").loads(body["info"])
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
    assert_error(api.post("png-info", json={"image": "not base64!!"}), 422, "base64")
    assert_error(api.post("png-info", json={"image": base64.b64encode(b"hello").decode()}), 422, "not an image")
    assert_error(api.post("img2img", json={**TINY, "init_images": ["%%%"]}), 422, "init_images[0]")
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
    assert_error(api.post("txt2img", data="{not json", headers={"Content-Type": "application/json"}), 422)
    assert_error(api.post("txt2img", json={**TINY, "override_settings": {"no_such": 1}}), 422, "no_such")
    ok = api.post("txt2img", json={**TINY, "send_images": False})
    assert ok.status_code == 200, ok.text


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
