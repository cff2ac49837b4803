"""Tests for modules/images.py (and images_naming.py): A1111's resize geometry, grid rows, filename patterns,
numbering, metadata placement per format, atomic writes and save callbacks. Reference: A1111 modules/images.py."""

from __future__ import annotations

import datetime
import hashlib
import io
import os
import sys
from types import SimpleNamespace

import pytest
from PIL import Image, PngImagePlugin

import modules
from modules import images, shared
from modules.errors import InvalidRequest
from modules.images import FilenameGenerator, ImageSaveParams, resize_image, sanitize_filename_part, save_image


def make_opts(**overrides):
    values = dict(samples_format="png", samples_filename_pattern="", save_images_add_number=True, save_to_dirs=False,
                  directories_filename_pattern="[date]", enable_pnginfo=True, save_txt=False, jpeg_quality=80)
    values.update(overrides)
    return SimpleNamespace(**values)


@pytest.fixture(autouse=True)
def no_global_state(monkeypatch):
    monkeypatch.setattr(shared, "opts", None)
    monkeypatch.setattr(shared, "sd_model", None)


def bands(size=(40, 20), colors=((255, 0, 0), (0, 0, 255))) -> Image.Image:
    """Left half first colour, right half second (or top/bottom when taller than wide)."""
    w, h = size
    im = Image.new("RGB", size, colors[0])
    box = (w // 2, 0, w, h) if w >= h else (0, h // 2, w, h)
    im.paste(colors[1], box)
    return im


# --- resize --------------------------------------------------------------------------------------------------------

def test_resize_just_resize_stretches():
    assert resize_image(0, bands(), 10, 30).size == (10, 30)


def test_resize_crop_and_resize_keeps_centre():
    # 40x20 (red | blue) into 20x20: scaled to 40x20 and centred, so x 0..9 of the source's red half is cut
    out = resize_image(1, bands(), 20, 20)
    assert out.size == (20, 20)
    assert out.getpixel((2, 10))[0] > 200 and out.getpixel((17, 10))[2] > 200


def test_resize_and_fill_stretches_edges_into_bars():
    im = Image.new("RGB", (40, 20), (0, 255, 0))
    im.paste((255, 0, 0), (0, 0, 40, 1))  # top row red
    im.paste((0, 0, 255), (0, 19, 40, 20))  # bottom row blue
    out = resize_image(2, im, 40, 40)  # fitted 40x20 at y 10..29, bars filled from the edge rows
    assert out.size == (40, 40)
    assert out.getpixel((20, 2))[0] > 200 and out.getpixel((20, 37))[2] > 200
    assert out.getpixel((20, 20))[1] > 200
    # portrait source into a landscape frame: left/right bars
    out = resize_image(2, Image.new("RGB", (10, 20), (9, 9, 9)), 40, 20)
    assert out.size == (40, 20) and out.getpixel((1, 10)) == (9, 9, 9)


def test_resize_upscale_hook_only_when_enlarging():
    calls = []

    def fake_upscaler(im, scale):
        calls.append(scale)
        return im.resize((int(im.width * scale), int(im.height * scale)))

    assert resize_image(0, bands(), 80, 40, upscaler_name="ESRGAN", upscale_fn=fake_upscaler).size == (80, 40)
    resize_image(0, bands(), 20, 10, upscale_fn=fake_upscaler)
    resize_image(0, Image.new("L", (8, 8)), 32, 32, upscale_fn=fake_upscaler)  # masks: plain Lanczos
    assert calls == [2.0]
    with pytest.raises(InvalidRequest):
        resize_image(0, bands(), 80, 40, upscaler_name="No such upscaler")
    assert resize_image(0, bands(), 80, 40, upscaler_name="Nearest").size == (80, 40)


# --- grids ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("count", "kwargs", "opts", "size"), [
    (4, {}, {}, (20, 20)),  # round(sqrt(4)) = 2 rows
    (3, {}, {}, (20, 20)),  # round(sqrt(3)) = 2 rows, 2 columns
    (6, {"batch_size": 3}, {"n_rows": 0}, (20, 30)),  # n_rows 0: as many rows as the batch size
    (6, {}, {"n_rows": 1}, (60, 10)),
    (5, {"rows": 9}, {}, (10, 50)),  # rows capped at the image count
    (6, {}, {"grid_prevent_empty_spots": True}, (30, 20)),
])
def test_image_grid_rows(count, kwargs, opts, size):
    tiles = [Image.new("RGB", (10, 10), (i * 40, 0, 0)) for i in range(count)]
    grid = images.image_grid(tiles, opts=SimpleNamespace(**opts), **kwargs)
    assert grid.size == size
    cols = size[0] // 10
    assert grid.getpixel((10 * ((count - 1) % cols) + 5, 10 * ((count - 1) // cols) + 5))[0] == (count - 1) * 40


def test_split_and_combine_grid_restore_the_image():
    im = Image.effect_noise((100, 70), 40).convert("RGB")
    grid = images.split_grid(im, tile_w=48, tile_h=48, overlap=16)
    assert list(images.combine_grid(grid).getdata()) == list(im.getdata())


# --- names ---------------------------------------------------------------------------------------------------------

def test_sanitize_filename_part():
    assert sanitize_filename_part(' a <b>:c/d\\e|f?g*h#"i\n. ', replace_spaces=False) == "a _b__c_d_e_f_g_h__i_"
    assert sanitize_filename_part("a b..") == "a_b"
    assert sanitize_filename_part("a b", replace_spaces=False) == "a b"
    assert len(sanitize_filename_part("x" * 300)) == 128
    assert sanitize_filename_part(None) is None


def test_filename_patterns():
    p = SimpleNamespace(steps=20, cfg_scale=7.5, sampler_name="DPM++ 2M", sd_model_hash="abc123",
                        sd_model_name="v1-5", job_timestamp="20240101120000", batch_size=2, batch_index=1,
                        n_iter=3, iteration=2, styles=[], denoising_strength=None, negative_prompt="bad")
    gen = FilenameGenerator(p, 42, "A cat, in a: hat!", Image.new("RGB", (64, 32)))
    today = datetime.date.today().isoformat()
    assert gen.apply("[seed]-[steps]-[cfg]-[width]x[height]") == "42-20-7.5-64x32"
    assert gen.apply("[prompt]|[prompt_spaces]|[prompt_words]") == "A_cat,_in_a__hat!|A cat, in a_ hat!|A cat in a hat"
    assert gen.apply("[sampler] [model_name] [model_hash] [date] [job_timestamp]") == (
        f"DPM++ 2M v1-5 abc123 {today} 20240101120000")
    assert gen.apply("[batch_number]-[generation_number]-[none]x") == "2-6-x"
    assert gen.apply("[datetime<%Y>]") == str(datetime.datetime.now().year)
    assert gen.apply("[datetime<%Y><Nowhere/Zone>]") == str(datetime.datetime.now().year)
    digest = hashlib.sha256(b"A cat, in a: hat!").hexdigest()
    assert gen.apply("[SEED] [unknown] [prompt_hash] [prompt_hash<4>]") == f"42 [unknown] {digest[:8]} {digest[:4]}"
    single = SimpleNamespace(batch_size=1, n_iter=1, denoising_strength=None)
    assert FilenameGenerator(single, 1, "p", None).apply("[seed]-[batch_number]-[generation_number]-[denoising]") \
        == "1"


def test_unknown_pattern_kept_and_failures_tolerated():
    gen = FilenameGenerator(None, None, None, None)
    assert gen.apply("[seed][steps][unknown]") == "[steps][unknown]"  # seed None -> "", p None -> kept
    assert gen.apply("[model_hash]") == "[model_hash]"


def test_next_sequence_number(tmp_path):
    assert images.get_next_sequence_number(str(tmp_path), "") == 0
    for name in ("00003-1.png", "00010-2-x.jpg", "notes.txt", ".atelier-x.tmp", "grid-0007.png"):
        (tmp_path / name).write_bytes(b"")
    assert images.get_next_sequence_number(str(tmp_path), "") == 11
    assert images.get_next_sequence_number(str(tmp_path), "grid") == 8


# --- saving --------------------------------------------------------------------------------------------------------

def test_save_numbering_patterns_and_dirs(tmp_path):
    im = Image.new("RGB", (16, 16))
    opts = make_opts()
    (tmp_path / "00041-x.png").write_bytes(b"")
    fn, txt = save_image(im, str(tmp_path), "", seed=7, prompt="a cat", info="i", opts=opts)
    assert fn == str(tmp_path / "00042-7-a cat.png") and txt is None  # not in dirs: [seed]-[prompt_spaces]

    opts = make_opts(save_to_dirs=True, save_txt=True)
    fn, txt = save_image(im, str(tmp_path), "", seed=8, prompt="a cat", info="params", opts=opts)
    folder = tmp_path / datetime.date.today().isoformat()
    assert fn == str(folder / "00000-8.png") and txt == str(folder / "00000-8.txt")
    with open(txt, encoding="utf8") as file:
        assert file.read() == "params\n"

    fn, _ = save_image(im, str(tmp_path), "grid", seed=8, opts=make_opts(samples_filename_pattern="[steps]"),
                       short_filename=True)
    assert os.path.basename(fn) == "grid-0000.png"
    fn, _ = save_image(im, str(tmp_path), "", forced_filename="exact", extension="jpg", opts=opts,
                       save_to_dirs=False)
    assert fn == str(tmp_path / "exact.jpg")
    fn, _ = save_image(im, str(tmp_path), "", seed=9, prompt="p", opts=make_opts(save_images_add_number=False))
    assert fn == str(tmp_path / "9-p.png")


def test_override_settings_pattern_and_path_escapes(tmp_path):
    p = SimpleNamespace(override_settings={"samples_filename_pattern": "../../[seed]"})
    fn, _ = save_image(Image.new("RGB", (8, 8)), str(tmp_path), "", seed=3, p=p, opts=make_opts())
    assert os.path.dirname(fn) == str(tmp_path) and os.path.basename(fn) == "00000-3.png"


@pytest.mark.parametrize("extension", ["png", "jpg", "webp", "avif", "gif"])
def test_infotext_round_trips_per_format(tmp_path, extension):
    info = 'a cat, "猫" ✓\nNegative prompt: x\nSteps: 20, Lora hashes: "a: 1, b: 2"'
    fn, _ = save_image(Image.new("RGBA", (16, 16), (1, 2, 3, 255)), str(tmp_path), "", seed=1, info=info,
                       extension=extension, opts=make_opts())
    with Image.open(fn) as im:
        geninfo, items = images.read_info_from_image(im)
    assert geninfo == info
    assert "exif" not in items and "parameters" not in items
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []


def test_png_chunk_types_and_disabled_pnginfo(tmp_path):
    latin, other = "café", "猫"
    opts = make_opts()
    for text in (latin, other):
        fn, _ = save_image(Image.new("RGB", (8, 8)), str(tmp_path), "", seed=1, info=text, opts=opts,
                           existing_info={"extra": "kept"})
        with Image.open(fn) as im:
            im.load()
            assert im.text["parameters"] == text and im.text["extra"] == "kept"
            is_itxt = isinstance(im.text["parameters"], PngImagePlugin.iTXt)
        assert is_itxt == (text == other)  # tEXt when Latin-1, iTXt otherwise
    fn, _ = save_image(Image.new("RGB", (8, 8)), str(tmp_path), "", seed=1, info="x",
                       opts=make_opts(enable_pnginfo=False))
    with Image.open(fn) as im:
        assert images.read_info_from_image(im)[0] is None


def test_callbacks_can_change_name_image_and_info(tmp_path):
    seen = []

    def before(params: ImageSaveParams):
        assert os.path.basename(params.filename) == "00000-5-p.png"
        params.filename = str(tmp_path / "renamed.png")
        params.pnginfo["parameters"] = "changed"
        params.image = Image.new("RGB", (4, 4))

    fn, _ = save_image(Image.new("RGB", (8, 8)), str(tmp_path), "", seed=5, prompt="p", info="orig", opts=make_opts(),
                       before_save=before, after_save=seen.append)
    assert fn == str(tmp_path / "renamed.png") and seen[0].filename == fn
    with Image.open(fn) as im:
        assert im.size == (4, 4) and images.read_info_from_image(im)[0] == "changed"


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(image, geninfo, filename, *args, **kwargs):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(images, "save_image_with_geninfo", broken)
    with pytest.raises(OSError):
        save_image(Image.new("RGB", (8, 8)), str(tmp_path), "", seed=1, opts=make_opts())
    assert os.listdir(tmp_path) == []


def test_default_options_come_from_templates(tmp_path):
    fn, _ = save_image(Image.new("RGB", (8, 8)), str(tmp_path), "", seed=1, prompt="p")
    assert fn == str(tmp_path / datetime.date.today().isoformat() / "00000-1.png")  # save_to_dirs, [date], [seed]


# --- reading -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("sampler", "expected"), [("k_euler", "Euler"), ("k_unknown", "Euler a")])
def test_novelai_metadata_becomes_infotext(monkeypatch, sampler, expected):
    fake = SimpleNamespace(samplers_map={"k_euler": "Euler"})  # the real registry would import torch
    monkeypatch.setitem(sys.modules, "modules.sd_samplers", fake)
    monkeypatch.setattr(modules, "sd_samplers", fake, raising=False)
    im = Image.new("RGB", (64, 32))
    im.info.update({"Software": "NovelAI", "Description": "a cat",
                    "Comment": f'{{"uc": "bad", "steps": 28, "sampler": "{sampler}", "scale": 11, "seed": 5}}'})
    geninfo, _ = images.read_info_from_image(im)
    assert geninfo == (f"a cat\nNegative prompt: bad\nSteps: 28, Sampler: {expected}, CFG scale: 11, Seed: 5, "
                       "Size: 64x32, Clip skip: 2, ENSD: 31337")


def test_decode_image_and_image_data():
    buf = io.BytesIO()
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "hello")
    Image.new("RGB", (3, 2)).save(buf, format="PNG", pnginfo=info)
    assert images.decode_image(buf.getvalue()).size == (3, 2)
    with pytest.raises(InvalidRequest) as excinfo:
        images.decode_image(b"definitely not an image")
    assert "not an image" in excinfo.value.message
    assert images.image_data(buf.getvalue()) == ("hello", None)
    assert images.image_data(b"plain text") == ("plain text", None)
    assert images.flatten(Image.new("RGBA", (2, 2), (0, 0, 0, 0)), "#ffffff").getpixel((0, 0)) == (255, 255, 255)
