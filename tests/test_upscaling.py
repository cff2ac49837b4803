"""Tests for modules/upscaling.py: latent modes, the upscaler list, ESRGAN-family loading through spandrel (a tiny
randomly initialised RRDBNet saved to a temp file), tiled inference and A1111's resize modes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modules import upscaling
from modules.errors import BadCheckpoint, MissingWeights, ModelNotFound


def test_latent_upscale_modes_match_a1111() -> None:
    assert list(upscaling.latent_upscale_modes) == [
        "Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)", "Latent (nearest)",
        "Latent (nearest-exact)",
    ]
    latent = torch.randn(2, 4, 8, 6)
    for name in upscaling.latent_upscale_modes:
        assert upscaling.is_latent_upscaler(name)
        assert upscaling.upscale_latent(latent, name, 128, 96).shape == (2, 4, 16, 12)
    expected = torch.nn.functional.interpolate(latent, size=(16, 12), mode="bilinear")
    assert torch.equal(upscaling.upscale_latent(latent, "Latent", 128, 96), expected)
    half = upscaling.upscale_latent(latent.half(), "Latent (bicubic antialiased)", 128, 96)
    assert half.dtype == torch.float16 and half.shape == (2, 4, 16, 12)
    assert not upscaling.is_latent_upscaler("Lanczos")
    with pytest.raises(ModelNotFound):
        upscaling.upscale_latent(latent, "Latent (cubic)", 128, 96)


def gradient(width: int, height: int) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    return Image.fromarray(np.stack([x * 7 % 256, y * 5 % 256, (x * y) % 256], -1).astype(np.uint8), "RGB")


def test_builtin_upscalers() -> None:
    ups = upscaling.list_upscalers([])
    assert [u.name for u in ups] == ["None", "Lanczos", "Nearest"]
    image = gradient(30, 20)
    for upscaler in ups:
        assert upscaler.upscale(image, 2.5).size == (72, 48)  # int(30*2.5)//8*8, int(20*2.5)//8*8
    nearest = upscaling.find_upscaler(ups, "Nearest").upscale(gradient(8, 8), 2)
    assert np.array_equal(np.array(nearest)[::2, ::2], np.array(gradient(8, 8)))
    assert upscaling.find_upscaler(ups, None).name == "None"
    assert upscaling.find_upscaler(ups, "lanczos").name == "Lanczos"
    with pytest.raises(ModelNotFound, match="ESRGAN"):
        upscaling.find_upscaler(ups, "4x-UltraSharp")


@pytest.fixture(scope="module")
def tiny_esrgan_state() -> dict[str, torch.Tensor]:
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    return ESRGAN(num_filters=8, num_blocks=1, scale=2).state_dict()


def test_list_upscalers_names_and_guessed_scales(tmp_path: Path) -> None:
    for name in ("RealESRGAN_x4plus.pth", "4x_foo.safetensors", "bar_x2.pt", "notes.txt", "sub/ESRGAN_4x.pth"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    ups = upscaling.list_upscalers([tmp_path, tmp_path / "missing"])
    names = [u.name for u in ups]
    assert names == ["None", "Lanczos", "Nearest", "4x_foo", "bar_x2", "ESRGAN_4x", "R-ESRGAN 4x+"]
    by_name = {u.name: u for u in ups}
    assert by_name["bar_x2"].scale == 2 and by_name["4x_foo"].scale == 4 and by_name["R-ESRGAN 4x+"].scale == 4
    assert by_name["ESRGAN_4x"].path == tmp_path / "sub" / "ESRGAN_4x.pth"
    assert all(u.model is None for u in ups)  # nothing loaded while listing


def save_tiny(tmp_path: Path, state: dict, filename: str) -> Path:
    path = tmp_path / filename
    if filename.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(state, str(path))
    elif filename.startswith("wrapped"):
        torch.save({"params_ema": state}, path)  # the layout Real-ESRGAN training writes
    else:
        torch.save(state, path)
    return path


@pytest.mark.parametrize("filename", ["tiny.pth", "tiny.safetensors", "wrapped.pth"])
def test_esrgan_family_model_loads_from_each_file_kind(tmp_path: Path, tiny_esrgan_state: dict, filename: str) -> None:
    path = save_tiny(tmp_path, tiny_esrgan_state, filename)
    upscaler = upscaling.find_upscaler(upscaling.list_upscalers([tmp_path]), path.stem)
    assert upscaler.scale == 4  # guessed before loading
    assert upscaler.do_upscale(gradient(8, 6), 2).size == (16, 12)
    assert upscaler.scale == 2  # read from the model


def test_esrgan_upscale_passes_and_tiling(tmp_path: Path, tiny_esrgan_state: dict) -> None:
    save_tiny(tmp_path, tiny_esrgan_state, "tiny.pth")
    upscaler = upscaling.find_upscaler(upscaling.list_upscalers([tmp_path]), "tiny")
    image = gradient(16, 12)
    upscaler.tile_size = 0
    whole = np.array(upscaler.do_upscale(image, 2)).astype(int)
    assert upscaler.upscale(image, 2).size == (32, 24)
    # 3x needs two passes of the 2x model, then Lanczos down to int(16*3)//8*8 x int(12*3)//8*8.
    assert upscaler.upscale(image, 3).size == (48, 32)
    # Tiled with small tiles: same size, and the cross-faded overlaps keep it close to the whole-image result.
    upscaler.tile_size, upscaler.tile_overlap = 8, 4
    tiled = np.array(upscaler.do_upscale(image, 2)).astype(int)
    assert tiled.shape == whole.shape == (24, 32, 3)
    assert np.abs(tiled - whole).mean() < 8


def test_tiled_inference_matches_whole_for_a_local_model() -> None:
    def local_model(x: torch.Tensor) -> torch.Tensor:
        return (x * 0.5 + 0.25).repeat_interleave(3, dim=2).repeat_interleave(3, dim=3)

    image = torch.rand(1, 3, 37, 50)
    tiled = upscaling.upscale_tensor_tiled(local_model, image, tile_size=16, tile_overlap=4)
    assert tiled.shape == (1, 3, 111, 150)
    assert torch.allclose(tiled, local_model(image), atol=1e-6)


def test_missing_and_corrupt_model_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(MissingWeights, match="gone.pth"):
        upscaling.load_upscaler_model(tmp_path / "gone.pth")
    garbage = tmp_path / "broken.pth"
    garbage.write_bytes(b"this is not a pickle" * 10)
    with pytest.raises(BadCheckpoint, match="broken.pth"):
        upscaling.load_upscaler_model(garbage)
    bad_st = tmp_path / "broken.safetensors"
    bad_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(BadCheckpoint, match="broken.safetensors"):
        upscaling.load_upscaler_model(bad_st)
    unknown = tmp_path / "unknown.pth"
    torch.save({"some.weight": torch.zeros(3, 3)}, unknown)
    with pytest.raises(BadCheckpoint, match="unknown.pth"):
        upscaling.find_upscaler(upscaling.list_upscalers([tmp_path]), "unknown").upscale(gradient(8, 8), 2)


def test_pixel_upscalers_plug_into_images_resize_image() -> None:
    from modules import images

    image = gradient(40, 20)
    nearest = upscaling.find_upscaler(upscaling.list_upscalers([]), "Nearest")
    out = images.resize_image(0, image, 100, 50, upscale_fn=nearest.upscale)
    assert out.size == (100, 50)
