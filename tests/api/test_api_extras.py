"""``/sdapi/v1/extra-single-image`` and ``extra-batch-images`` over real HTTP: sizes, html_info, kept parameters,
face restoration refused, and the same result as :func:`modules.postprocessing.run_extras` called directly."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from modules.postprocessing import ExtrasSettings, run_extras
from tests.api.server import Served, assert_error, b64_png, decode, pixels, serve


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("extras")
    (tmp / "ckpt").mkdir()
    served = serve(tmp, None, tmp / "ckpt")
    yield served
    served.stop()


def picture(width: int, height: int) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    return Image.fromarray(np.stack([x * 11 % 256, y * 7 % 256, (x + y) * 5 % 256], -1).astype(np.uint8), "RGB")


def test_single_image_scale_by(api: Served) -> None:
    source = picture(24, 16)
    response = api.post("extra-single-image", json={"image": b64_png(source, "a cat\nSteps: 3, Seed: 9, Size: 24x16"),
                                                    "upscaling_resize": 2, "upscaler_1": "Lanczos"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"html_info", "image"}
    assert body["html_info"] == "<p>Postprocess upscale by: 2, Postprocess upscaler: Lanczos</p>"
    result = decode(body["image"])
    assert result.size == (48, 32)
    assert result.info["parameters"].startswith("a cat")  # the source's generation parameters are kept
    expected, _ = run_extras(source, ExtrasSettings(upscaling_resize=2, upscaler_1="Lanczos"), [])
    assert np.array_equal(pixels(body["image"]), np.asarray(expected))


def test_single_image_scale_to_with_and_without_crop(api: Served) -> None:
    base = {"image": b64_png(picture(32, 16)), "resize_mode": 1, "upscaling_resize_w": 48, "upscaling_resize_h": 48,
            "upscaler_1": "Nearest"}
    cropped = api.post("extra-single-image", json=base).json()
    assert decode(cropped["image"]).size == (48, 48) and "crop to: 48x48" in cropped["html_info"]
    fitted = api.post("extra-single-image", json={**base, "upscaling_crop": False}).json()
    assert decode(fitted["image"]).size == (48, 24) and "crop" not in fitted["html_info"]


def test_batch_images_and_upscaler_2_blend(api: Served) -> None:
    items = [{"data": b64_png(picture(16, 16)), "name": "a.png"}, {"data": b64_png(picture(8, 16)), "name": "b.png"}]
    request = {"imageList": items, "upscaling_resize": 3, "upscaler_1": "Lanczos", "upscaler_2": "Nearest",
               "extras_upscaler_2_visibility": 0.5}
    response = api.post("extra-batch-images", json=request)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [decode(b).size for b in body["images"]] == [(48, 48), (24, 48)]
    assert "Postprocess upscaler 2: Nearest" in body["html_info"]
    lanczos, _ = run_extras(picture(16, 16), ExtrasSettings(upscaling_resize=3, upscaler_1="Lanczos"), [])
    assert not np.array_equal(pixels(body["images"][0]), np.asarray(lanczos))  # the blend changed it
    assert_error(api.post("extra-batch-images", json={"imageList": []}), 422, "imageList")


def test_face_restoration_is_refused_but_zero_is_fine(api: Served) -> None:
    image = b64_png(picture(8, 8))
    assert_error(api.post("extra-single-image", json={"image": image, "gfpgan_visibility": 0.5}), 422,
                 "gfpgan_visibility", "face restoration is not available")
    assert_error(api.post("extra-batch-images", json={"imageList": [{"data": image, "name": "x"}],
                                                      "codeformer_visibility": 1}), 422, "codeformer_visibility")
    ok = api.post("extra-single-image", json={"image": image, "gfpgan_visibility": 0, "codeformer_visibility": 0})
    assert ok.status_code == 200, ok.text
    assert_error(api.post("extra-single-image", json={"image": image, "resize_mode": 5}), 422, "resize_mode")
