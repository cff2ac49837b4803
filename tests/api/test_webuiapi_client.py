"""The API as scripts written for A1111 see it: the ``webuiapi`` client package (0.9.17) against a real server.

webuiapi sends its own full set of defaults (``seed_resize_from_h=0``, ``eta=1.0``, ``scheduler="automatic"``,
``sampler_index``, empty ``alwayson_scripts`` ...), so this catches fields our request models would refuse or misread.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import webuiapi
from PIL import Image

from tests.api.server import Served, serving_on_one_thread

pytest_plugins = ["tests.pipeline_fixtures"]

SMALL = {"steps": 2, "width": 32, "height": 32, "cfg_scale": 5.0}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_sd1: Any, tiny_checkpoint_dir: Path) -> Iterator[Served]:
    with serving_on_one_thread(tmp_path_factory.mktemp("webuiapi"), tiny_sd1, tiny_checkpoint_dir) as server:
        yield server


@pytest.fixture
def client(served: Served) -> webuiapi.WebUIApi:
    return webuiapi.WebUIApi(baseurl=f"{served.url}/sdapi/v1", sampler="Euler a", steps=2)


def test_txt2img_with_the_clients_defaults_is_reproducible(client: webuiapi.WebUIApi, served: Served) -> None:
    first = client.txt2img(prompt="a red cube", seed=11, **SMALL)
    again = client.txt2img(prompt="a red cube", seed=11, **SMALL)
    other = client.txt2img(prompt="a red cube", seed=12, **SMALL)
    assert first.image.size == (32, 32)
    assert first.info["seed"] == 11 and first.info["sampler_name"] == "Euler a"
    assert "Seed: 11" in first.info["infotexts"][0]
    assert list(first.image.getdata()) == list(again.image.getdata())
    assert list(first.image.getdata()) != list(other.image.getdata())
    # The same request through plain JSON with only the essential fields gives the same picture: the client's extra
    # defaults (seed_resize_from_h=0, eta, s_* ...) change nothing.
    plain = served.txt2img(prompt="a red cube", negative_prompt="", seed=11, sampler_name="Euler a", **SMALL)
    assert plain["info"] and first.json["images"][0] == plain["images"][0]


def test_img2img_extras_and_png_info(client: webuiapi.WebUIApi) -> None:
    source = Image.new("RGB", (32, 32), (200, 30, 30))
    result = client.img2img(images=[source], prompt="a cube", seed=3, denoising_strength=0.5, **SMALL)
    assert result.image.size == (32, 32) and result.info["seed"] == 3

    upscaled = client.extra_single_image(image=result.image, upscaler_1="Lanczos", upscaling_resize=2)
    assert upscaled.image.size == (64, 64)

    info = client.png_info(result.image)
    assert "Seed: 3" in info.info and "Denoising strength: 0.5" in info.info


def test_listing_and_option_helpers(client: webuiapi.WebUIApi, served: Served) -> None:
    names = client.util_get_model_names()
    assert names and all(isinstance(n, str) for n in names)
    assert any(s["name"] == "Euler a" for s in client.get_samplers())
    assert any(u["name"] == "Lanczos" for u in client.get_upscalers())
    assert isinstance(client.get_prompt_styles(), list) and isinstance(client.get_sd_vae(), list)
    client.set_options({"jpeg_quality": 91})
    assert client.get_options()["jpeg_quality"] == 91 and served.ctx.opts.jpeg_quality == 91
    assert client.get_progress()["progress"] == 0
    client.interrupt()  # idle: accepted, nothing breaks
    assert client.txt2img(prompt="still fine", seed=1, **SMALL).image.size == (32, 32)
