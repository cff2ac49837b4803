"""img2img in a real browser: an uploaded image, an uploaded mask, a brush-drawn mask, and missing-input messages."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.ui.conftest import open_tab, set_number, textbox

expect = pytest.importorskip("playwright.sync_api").expect

GENERATION_TIMEOUT_MS = 120_000


@pytest.fixture
def pictures(tmp_path: Path) -> dict[str, Path]:
    picture = Image.new("RGB", (64, 64), (40, 120, 200))
    picture.paste((230, 200, 20), (16, 16, 48, 48))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (20, 20, 44, 44))
    paths = {"picture": tmp_path / "picture.png", "mask": tmp_path / "mask.png"}
    picture.save(paths["picture"])
    mask.save(paths["mask"])
    return paths


def prepare(page: Any, prompt: str, mode_tab: str, seed: int = 5) -> None:
    open_tab(page, "tab_img2img")
    open_tab(page, mode_tab)
    textbox(page, "img2img_prompt").fill(prompt)
    set_number(page, "img2img_width", 32)
    set_number(page, "img2img_height", 32)
    set_number(page, "img2img_steps", 2)
    set_number(page, "img2img_denoising_strength", 0.5)
    page.locator("#img2img_seed input").fill(str(seed))
    page.locator("#img2img_seed input").blur()


def generate(page: Any) -> Any:
    page.locator("#img2img_generate").click()
    log = page.locator("#img2img_html_log")
    expect(log).to_contain_text(re.compile("Time taken|Error"), timeout=GENERATION_TIMEOUT_MS)
    expect(page.locator("#img2img_progress")).to_have_text("", timeout=10_000)
    return log


def saved_images(data_dir: Path) -> set[Path]:
    return set((data_dir / "outputs" / "img2img-images").rglob("*.png"))


def test_img2img_generates_from_an_uploaded_image(page: Any, ui_server: Any, pictures: dict[str, Path]) -> None:
    before = saved_images(ui_server.data_dir)
    prepare(page, "a yellow square", "img2img_img2img_tab")
    page.locator("#img2img_image input[type=file]").set_input_files(str(pictures["picture"]))
    expect(page.locator("#img2img_image img")).to_be_visible()
    generate(page)
    expect(page.locator("#img2img_gallery img").first).to_be_visible()
    info = page.locator("#img2img_generation_info")
    expect(info).to_contain_text("a yellow square")
    expect(info).to_contain_text("Denoising strength: 0.5")
    expect(info).to_contain_text("Seed: 5")
    assert len(saved_images(ui_server.data_dir) - before) == 1


def test_inpaint_upload_uses_the_uploaded_mask(page: Any, pictures: dict[str, Path]) -> None:
    prepare(page, "a green square", "img2img_inpaint_upload_tab")
    expect(page.locator("#img2img_mask_blur")).to_be_visible()
    page.locator("#img_inpaint_base input[type=file]").set_input_files(str(pictures["picture"]))
    page.locator("#img_inpaint_mask input[type=file]").set_input_files(str(pictures["mask"]))
    expect(page.locator("#img_inpaint_mask img")).to_be_visible()
    generate(page)
    info = page.locator("#img2img_generation_info")
    expect(info).to_contain_text("a green square")
    expect(info).to_contain_text("Mask blur: 4")


def test_inpaint_with_a_drawn_mask(page: Any, pictures: dict[str, Path]) -> None:
    prepare(page, "a red square", "img2img_inpaint_tab")
    page.locator("#img2maskimg input[type=file]").set_input_files(str(pictures["picture"]))
    canvas = page.locator("#img2maskimg canvas").first
    expect(canvas).to_be_visible()
    page.wait_for_timeout(500)  # the editor lays out the uploaded picture before it accepts strokes

    log = generate(page)  # nothing drawn yet: a clear message, no job
    expect(log).to_contain_text("The mask is empty")

    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 20, cy)
    page.mouse.down()
    page.mouse.move(cx + 20, cy + 10, steps=3)  # few events: the canvas redraws slowly in software rendering
    page.mouse.up()
    generate(page)
    info = page.locator("#img2img_generation_info")
    expect(info).to_contain_text("a red square")
    expect(info).to_contain_text("Mask blur: 4")


def test_img2img_without_an_image_explains_what_is_missing(page: Any) -> None:
    prepare(page, "nothing uploaded", "img2img_img2img_tab")
    log = generate(page)
    expect(log).to_contain_text("No image for img2img")


# mask helpers (no browser) ----------------------------------------------------------------------------------------
def test_mask_from_editor_marks_every_drawn_pixel_of_every_layer() -> None:
    from modules.ui_img2img import mask_from_editor

    background = Image.new("RGBA", (8, 8), (10, 20, 30, 255))
    first, second = (Image.new("RGBA", (8, 8), (0, 0, 0, 0)) for _ in range(2))
    first.putpixel((2, 3), (255, 255, 255, 255))
    second.putpixel((6, 1), (255, 255, 255, 40))  # a faint stroke still counts
    picture, mask = mask_from_editor({"background": background, "layers": [first, second], "composite": None})
    assert picture.mode == "RGB" and picture.getpixel((0, 0)) == (10, 20, 30)
    assert mask.mode == "L"
    assert {xy for xy in ((x, y) for x in range(8) for y in range(8)) if mask.getpixel(xy)} == {(2, 3), (6, 1)}
    assert mask.getpixel((6, 1)) == 255


def test_mask_from_editor_rejects_missing_image_and_empty_mask() -> None:
    from modules.errors import InvalidRequest
    from modules.ui_img2img import mask_from_editor

    with pytest.raises(InvalidRequest, match="No image to inpaint"):
        mask_from_editor(None)
    with pytest.raises(InvalidRequest, match="mask is empty"):
        mask_from_editor({"background": Image.new("RGB", (4, 4)), "layers": [Image.new("RGBA", (4, 4))]})


def test_uploaded_mask_uses_transparency_else_brightness() -> None:
    from modules.ui_img2img import uploaded_mask

    transparent = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    transparent.putpixel((1, 1), (0, 0, 0, 255))
    assert uploaded_mask(transparent).getpixel((1, 1)) == 255 and uploaded_mask(transparent).getpixel((0, 0)) == 0
    opaque = Image.new("RGB", (4, 4), (0, 0, 0))
    opaque.putpixel((2, 2), (255, 255, 255))
    assert uploaded_mask(opaque).getpixel((2, 2)) == 255 and uploaded_mask(opaque).getpixel((0, 0)) == 0
