"""Tests for modules/postprocessing.py: the Extras upscale's sizes in both resize modes, crop vs fit, the upscaler 2
blend, model files from the ESRGAN folder, infotext and clear errors for bad settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modules.errors import InvalidRequest
from modules.infotext import parse_generation_parameters
from modules.postprocessing import ExtrasSettings, run_extras


def gradient(width: int, height: int) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    return Image.fromarray(np.stack([x * 9 % 256, y * 13 % 256, (x * y * 3) % 256], -1).astype(np.uint8), "RGB")


def test_scale_by_rounds_each_side_down_to_a_multiple_of_8() -> None:
    image, info = run_extras(gradient(30, 20), ExtrasSettings(upscaling_resize=2.5, upscaler_1="Lanczos"), [])
    assert image.size == (72, 48) and image.mode == "RGB"
    assert info == "Postprocess upscale by: 2.5, Postprocess upscaler: Lanczos"
    _, info = run_extras(gradient(16, 16), ExtrasSettings(upscaler_1="nearest"), [])
    assert info == "Postprocess upscale by: 2, Postprocess upscaler: Nearest"  # names match case-insensitively


def test_scale_to_with_crop_gives_the_exact_size_from_the_centre() -> None:
    source = gradient(32, 32)
    settings = ExtrasSettings(resize_mode=1, upscaling_resize_w=100, upscaling_resize_h=60, upscaler_1="Nearest")
    image, info = run_extras(source, settings, [])
    assert image.size == (100, 60)
    params = parse_generation_parameters(info)
    assert params["Postprocess upscale to-1"] == "100" and params["Postprocess crop to-2"] == "60"
    # Covering 128x64 from a square scales by 4 (128x128); the centre rows 32..96 are kept.
    settings = ExtrasSettings(resize_mode=1, upscaling_resize_w=128, upscaling_resize_h=64, upscaler_1="Nearest")
    cropped, _ = run_extras(source, settings, [])
    whole, _ = run_extras(source, ExtrasSettings(upscaling_resize=4, upscaler_1="Nearest"), [])
    assert cropped.size == (128, 64) and whole.size == (128, 128)
    assert np.array_equal(np.array(cropped), np.array(whole)[32:96])


def test_scale_to_without_crop_fits_inside_keeping_the_aspect_ratio() -> None:
    settings = ExtrasSettings(resize_mode=1, upscaling_resize_w=128, upscaling_resize_h=64, upscaling_crop=False,
                              upscaler_1="Lanczos")
    image, info = run_extras(gradient(32, 16), settings, [])
    assert image.size == (128, 64)
    tall, _ = run_extras(gradient(16, 32), settings, [])
    assert tall.size == (32, 64)  # limited by the height: 2x
    assert "crop" not in info.lower()


def test_upscaler_2_is_blended_with_its_visibility() -> None:
    source = gradient(24, 16)
    lanczos, _ = run_extras(source, ExtrasSettings(upscaler_1="Lanczos"), [])
    nearest, _ = run_extras(source, ExtrasSettings(upscaler_1="Nearest"), [])
    assert not np.array_equal(np.array(lanczos), np.array(nearest))
    blended, info = run_extras(source, ExtrasSettings(upscaler_1="Lanczos", upscaler_2="Nearest",
                                                      extras_upscaler_2_visibility=0.25), [])
    assert np.array_equal(np.array(blended), np.array(Image.blend(lanczos, nearest, 0.25)))
    assert "Postprocess upscaler 2: Nearest" in info and "Postprocess upscaler 2 visibility: 0.25" in info
    # Visibility 0 ignores upscaler 2 entirely (even an unknown name is not looked up).
    same, info = run_extras(source, ExtrasSettings(upscaler_1="Lanczos", upscaler_2="whatever"), [])
    assert np.array_equal(np.array(same), np.array(lanczos)) and "upscaler 2" not in info


def test_model_file_from_the_esrgan_folder(tmp_path: Path) -> None:
    from safetensors.torch import save_file
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    save_file(ESRGAN(num_filters=8, num_blocks=1, scale=2).state_dict(), str(tmp_path / "tiny_2x.safetensors"))
    image, info = run_extras(gradient(16, 8), ExtrasSettings(upscaling_resize=2, upscaler_1="tiny_2x"), [tmp_path])
    assert image.size == (32, 16) and info.endswith("Postprocess upscaler: tiny_2x")
    lanczos, _ = run_extras(gradient(16, 8), ExtrasSettings(upscaling_resize=2, upscaler_1="Lanczos"), [])
    assert not np.array_equal(np.array(image), np.array(lanczos))


def test_upscaler_1_none_leaves_the_image_as_it_is() -> None:
    source = gradient(20, 12)
    image, info = run_extras(source, ExtrasSettings(upscaler_2="Lanczos", extras_upscaler_2_visibility=1.0), [])
    assert info == "" and np.array_equal(np.array(image), np.array(source))


def test_rgba_input_becomes_rgb() -> None:
    image, _ = run_extras(Image.new("RGBA", (16, 16), (10, 20, 30, 0)), ExtrasSettings(upscaler_1="Nearest"), [])
    assert image.mode == "RGB" and image.getpixel((5, 5)) == (10, 20, 30)


@pytest.mark.parametrize(("settings", "words"), [
    (ExtrasSettings(upscaler_1="4x-Nope"), ["4x-Nope", "Lanczos", "Nearest"]),
    (ExtrasSettings(upscaler_1="Lanczos", upscaler_2="Nope", extras_upscaler_2_visibility=0.5),
     ["upscaler_2", "Nope"]),
    (ExtrasSettings(resize_mode=2), ["resize_mode"]),
    (ExtrasSettings(upscaling_resize=0), ["upscaling_resize"]),
    (ExtrasSettings(resize_mode=1, upscaling_resize_w=0), ["upscaling_resize_w"]),
    (ExtrasSettings(extras_upscaler_2_visibility=1.5), ["visibility"]),
    (ExtrasSettings(upscaling_resize=16, upscaler_1="Lanczos"), ["larger than"]),
])
def test_bad_settings_are_invalid_requests(settings: ExtrasSettings, words: list[str]) -> None:
    with pytest.raises(InvalidRequest) as caught:
        run_extras(gradient(2048, 8), settings, [])
    for word in words:
        assert word in caught.value.message
