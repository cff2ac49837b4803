"""The HTTP API on a fresh install: no checkpoint of the user's own, so the shipped demo model answers, and draws what
the request asks for (judged by ``modules.training.evaluate.analyze``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image

from modules.paths import DEMO_CHECKPOINT_DIR
from modules.training import shapes_dataset as ds
from modules.training.demo_model import CHECKPOINT_FILE
from modules.training.evaluate import analyze
from tests.api.server import Served, assert_error, b64_png, pixels, serve_with_cache

pytestmark = pytest.mark.skipif(not (DEMO_CHECKPOINT_DIR / CHECKPOINT_FILE).is_file(),
                                reason="the demo checkpoint is not in this checkout")
DEMO_REQUEST = {"steps": 20, "width": 64, "height": 64, "cfg_scale": 7.0, "sampler_name": "Euler a"}


@pytest.fixture(scope="module")
def fresh_install(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data = tmp_path_factory.mktemp("fresh-data")
    empty = tmp_path_factory.mktemp("no-checkpoints")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    served = serve_with_cache(data, empty)
    try:
        yield served
    finally:
        served.stop()
        torch.set_num_threads(threads)


def test_the_demo_model_is_the_only_and_default_checkpoint(fresh_install: Served) -> None:
    models = fresh_install.get("sd-models").json()
    assert [m["model_name"] for m in models] == [Path(CHECKPOINT_FILE).stem]
    response = fresh_install.post("txt2img", json={
        **DEMO_REQUEST, "prompt": "a green square on a white background, center", "seed": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert json.loads(body["info"])["sd_model_name"] == Path(CHECKPOINT_FILE).stem
    seen = analyze(pixels(body["images"][0]))
    assert (seen.colour, seen.background) == ("green", "white"), seen


def test_img2img_on_the_demo_model_repaints_the_object_in_the_prompted_colour(fresh_install: Served) -> None:
    start = ds.render(ds.ShapeSpec("circle", "red", "blue", "center", "large"), 64)
    assert analyze(start).colour == "red"
    response = fresh_install.post("img2img", json={
        **DEMO_REQUEST, "prompt": "a yellow circle on a blue background, center", "seed": 5,
        "init_images": [b64_png(Image.fromarray(start))], "denoising_strength": 0.75})
    assert response.status_code == 200, response.text
    seen = analyze(pixels(response.json()["images"][0]))
    assert (seen.colour, seen.background) == ("yellow", "blue"), seen


def test_without_any_checkpoint_txt2img_explains_where_checkpoints_go(fresh_install: Served,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fresh_install.ctx, "checkpoints", {})
    response = fresh_install.post("txt2img", json={**DEMO_REQUEST, "prompt": "a", "steps": 2})
    assert_error(response, 404, "No checkpoint")
    assert "models/Stable-diffusion" in response.json()["hint"]
