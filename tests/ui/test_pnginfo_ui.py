"""PNG Info in a real browser: read a generated PNG's infotext, and send parameters to txt2img and img2img."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image, PngImagePlugin

from tests.ui.conftest import dropdown_value, number_value, open_tab, textbox

expect = pytest.importorskip("playwright.sync_api").expect

INFOTEXT = (
    "a castle on a hill, (masterpiece:1.2)\n"
    "Negative prompt: lowres, blurry\n"
    "Steps: 3, Sampler: Euler a, Schedule type: Karras, CFG scale: 5.5, Seed: 4242, Size: 48x40, Model: tiny-sd1, "
    "Denoising strength: 0.45, Clip skip: 2, Hires upscale: 1.5, Hires steps: 4, Hires upscaler: Latent (nearest), "
    "Version: v1.10.0"
)


def png_with_infotext(folder: Path, text: str | None, name: str = "source.png") -> Path:
    info = PngImagePlugin.PngInfo()
    if text is not None:
        info.add_text("parameters", text)
    path = folder / name
    Image.new("RGB", (48, 40), (200, 30, 30)).save(path, pnginfo=info)
    return path


def upload_to_pnginfo(page: Any, path: Path) -> None:
    open_tab(page, "tab_pnginfo")
    page.locator("#pnginfo_image input[type=file]").set_input_files(str(path))


def generated_png(ui_server: Any) -> Path:
    """A PNG saved by the real pipeline (job queue, tiny checkpoint, A1111 file naming)."""
    from modules.api.api import run_on_queue
    from modules.processing import StableDiffusionProcessingTxt2Img

    folder = ui_server.data_dir / "outputs" / "txt2img-images"
    before = set(folder.rglob("*.png"))
    p = StableDiffusionProcessingTxt2Img(prompt="a blue sphere", negative_prompt="dark", steps=2, width=32,
                                         height=32, seed=99, sampler_name="Euler", scheduler="Automatic")
    run_on_queue(p, ui_server.ctx, "txt2img", None)
    (path,) = set(folder.rglob("*.png")) - before
    return path


def test_generated_png_shows_its_infotext(page: Any, ui_server: Any) -> None:
    path = generated_png(ui_server)
    with Image.open(path) as image:
        expected = image.info["parameters"]
    upload_to_pnginfo(page, path)
    info = page.locator("#pnginfo_html_info")
    expect(info).to_contain_text("a blue sphere")
    expect(info).to_contain_text("Negative prompt: dark")
    expect(info).to_contain_text("Seed: 99")
    assert expected.split("\n")[-1] in info.inner_text()
    expect(page.locator("#pnginfo_parameters")).to_contain_text("Euler")


def test_send_to_txt2img_fills_every_mapped_field(page: Any, tmp_path: Path) -> None:
    upload_to_pnginfo(page, png_with_infotext(tmp_path, INFOTEXT))
    expect(page.locator("#pnginfo_html_info")).to_contain_text("Seed: 4242")
    page.locator("#pnginfo_send_to_txt2img").click()
    expect(page.locator("#tab_txt2img")).to_be_visible()

    expect(textbox(page, "txt2img_prompt")).to_have_value("a castle on a hill, (masterpiece:1.2)")
    expect(textbox(page, "txt2img_neg_prompt")).to_have_value("lowres, blurry")
    expect(page.locator("#txt2img_seed input")).to_have_value("4242")
    assert number_value(page, "txt2img_steps") == 3
    assert number_value(page, "txt2img_width") == 48
    assert number_value(page, "txt2img_height") == 40
    assert number_value(page, "txt2img_cfg_scale") == 5.5
    assert dropdown_value(page, "txt2img_sampling") == "Euler a"
    assert dropdown_value(page, "txt2img_scheduler") == "Karras"
    # hires fix: the accordion opens and its fields are filled
    expect(page.locator("#txt2img_hr_scale")).to_be_visible()
    assert number_value(page, "txt2img_hr_scale") == 1.5
    assert number_value(page, "txt2img_hires_steps") == 4
    assert number_value(page, "txt2img_denoising_strength") == 0.45
    assert dropdown_value(page, "txt2img_hr_upscaler") == "Latent (nearest)"
    # settings the infotext names that differ from the current ones become overrides
    expect(page.locator("#txt2img_override_settings")).to_contain_text("Clip skip: 2")
    # the counter follows the pasted prompt
    expect(page.locator("#txt2img_token_counter")).not_to_have_text("0/75")


def test_send_to_img2img_fills_fields_and_the_image(page: Any, tmp_path: Path) -> None:
    upload_to_pnginfo(page, png_with_infotext(tmp_path, INFOTEXT))
    expect(page.locator("#pnginfo_html_info")).to_contain_text("Seed: 4242")
    page.locator("#pnginfo_send_to_img2img").click()
    expect(page.locator("#tab_img2img")).to_be_visible()
    expect(page.locator("#img2img_image img")).to_be_visible()
    expect(textbox(page, "img2img_prompt")).to_have_value("a castle on a hill, (masterpiece:1.2)")
    expect(page.locator("#img2img_seed input")).to_have_value("4242")
    assert number_value(page, "img2img_denoising_strength") == 0.45
    assert number_value(page, "img2img_width") == 48
    assert dropdown_value(page, "img2img_sampling") == "Euler a"


def test_read_parameters_button_parses_an_infotext_typed_into_the_prompt(page: Any) -> None:
    textbox(page, "txt2img_prompt").fill(INFOTEXT)
    page.locator("#txt2img_paste").click()
    expect(textbox(page, "txt2img_prompt")).to_have_value("a castle on a hill, (masterpiece:1.2)")
    expect(page.locator("#txt2img_seed input")).to_have_value("4242")
    assert number_value(page, "txt2img_steps") == 3


def test_image_without_parameters_says_so(page: Any, tmp_path: Path) -> None:
    upload_to_pnginfo(page, png_with_infotext(tmp_path, None, name="plain.png"))
    expect(page.locator("#pnginfo_html_info")).to_contain_text("Nothing found")


# paste helpers (no browser) ---------------------------------------------------------------------------------------
def test_paste_values_convert_for_each_component_and_skip_what_does_not_fit() -> None:
    import gradio as gr

    from modules.ui_common import parse_infotext, paste_values

    steps = gr.Slider(minimum=1, maximum=150, step=1, value=20)
    cfg = gr.Slider(minimum=1, maximum=30, step=0.5, value=7)
    sampler = gr.Dropdown(choices=["Euler", "Euler a"], value="Euler")
    hires = gr.Checkbox(value=False)
    prompt = gr.Textbox()
    params = parse_infotext(INFOTEXT)
    values = paste_values([(steps, "Steps"), (cfg, "CFG scale"), (sampler, "Sampler"), (prompt, "Prompt"),
                           (hires, lambda p: "Hires upscale" in p), (steps, "No such key")], params)
    assert values[:5] == [3, 5.5, "Euler a", "a castle on a hill, (masterpiece:1.2)", True]
    assert isinstance(values[5], type(gr.skip()))
    unknown = paste_values([(sampler, "Sampler")], {"Sampler": "Not a sampler"})
    assert isinstance(unknown[0], type(gr.skip()))
