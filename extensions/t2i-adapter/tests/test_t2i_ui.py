"""The T2I-Adapter accordion in a real browser (the app from ``webui.build_app`` with a tiny SD1 checkpoint, headless
Chromium): open it, upload a condition picture (which enables the unit), find a new adapter with the refresh
button, pick the canny preprocessor (its sliders appear), preview the map, generate, and paste the infotext back."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from tests.ui import conftest as ui_fixtures
from tests.ui.conftest import CHROMIUM, number_value, set_number, textbox

EXTENSION = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(EXTENSION))

from t2i_adapter.adapter_full import Adapter, FullAdapterConfig  # noqa: E402

expect = pytest.importorskip("playwright.sync_api").expect
pytestmark = [pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"UI tests need Chromium at {CHROMIUM}"),
              pytest.mark.slow]  # its own app server and browser: about a minute

# the app, the browser and a fresh page from tests/ui (a session server of this module's own)
ui_server, browser, page = ui_fixtures.ui_server, ui_fixtures.browser, ui_fixtures.page

T2I = "script_txt2img_t2iadapter"
ADAPTER = "tiny-ui-edge"
GENERATION_TIMEOUT_MS = 120_000


def write_tiny_adapter(folder: Path) -> None:
    """A random adapter for the UI server's tiny SD1 checkpoint (levels of 32/64 channels, VAE factor 2)."""
    torch.manual_seed(0)
    module = Adapter(FullAdapterConfig(channels=(32, 64), nums_rb=1, cond_channels=1, unshuffle=2))
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(module.state_dict(), folder / f"{ADAPTER}.pth")


def choose(page: Any, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").first.click()
    page.get_by_role("option", name=option, exact=True).click()


def wait_for_result(page: Any) -> None:
    expect(page.locator("#txt2img_html_log")).to_contain_text("Time taken", timeout=GENERATION_TIMEOUT_MS)
    expect(page.locator("#txt2img_progress")).to_have_text("", timeout=10_000)


def test_a_unit_from_the_accordion_steers_generation_and_pastes_back(page: Any, ui_server: Any,
                                                                     tmp_path: Path) -> None:
    write_tiny_adapter(ui_server.paths.model_dir("T2I-Adapter"))
    square = np.zeros((32, 32, 3), np.uint8)
    square[8:24, 8:24] = 255
    Image.fromarray(square).save(tmp_path / "square.png")

    expect(page.locator(f"#{T2I}_unit0_enabled")).to_be_hidden()
    page.locator(f"#{T2I}_accordion").get_by_text("T2I-Adapter").first.click()
    enabled = page.locator(f"#{T2I}_unit0_enabled input")
    expect(enabled).to_be_visible()
    expect(enabled).not_to_be_checked()
    page.locator(f"#{T2I}_unit0_image input[type=file]").set_input_files(str(tmp_path / "square.png"))
    expect(page.locator(f"#{T2I}_unit0_image img")).to_be_visible()
    expect(enabled).to_be_checked()  # an uploaded picture enables its unit

    page.locator(f"#{T2I}_unit0_refresh").click()
    choose(page, f"{T2I}_unit0_model", ADAPTER)
    expect(page.locator(f"#{T2I}_unit0_threshold_a")).to_be_hidden()
    choose(page, f"{T2I}_unit0_module", "canny")
    expect(page.locator(f"#{T2I}_unit0_threshold_a")).to_contain_text("Low threshold")
    assert number_value(page, f"{T2I}_unit0_threshold_a") == 100
    page.locator(f"#{T2I}_unit0_preview_button").click()
    expect(page.locator(f"#{T2I}_unit0_preview img")).to_be_visible()
    set_number(page, f"{T2I}_unit0_weight", 0.8)
    set_number(page, f"{T2I}_unit0_threshold_a", 90)

    textbox(page, "txt2img_prompt").fill("a cube")
    set_number(page, "txt2img_width", 32)
    set_number(page, "txt2img_height", 32)
    page.locator("#txt2img_generate").click()
    wait_for_result(page)
    info = page.locator("#txt2img_generation_info")
    expect(info).to_contain_text(f'T2I-Adapter 0: "module: canny, model: {ADAPTER} [')
    expect(info).to_contain_text("weight: 0.8, guidance start: 0.0, guidance end: 1.0")
    expect(info).to_contain_text("threshold a: 90.0, threshold b: 200.0")
    infotext = info.inner_text()

    enabled.uncheck()
    set_number(page, f"{T2I}_unit0_weight", 1.5)
    set_number(page, f"{T2I}_unit0_threshold_a", 30)
    textbox(page, "txt2img_prompt").fill(infotext)
    page.locator("#txt2img_paste").click()
    expect(textbox(page, "txt2img_prompt")).to_have_value("a cube")
    expect(enabled).to_be_checked()
    expect(page.locator(f"#{T2I}_unit0_weight input[type=number]")).to_have_value("0.8")
    expect(page.locator(f"#{T2I}_unit0_threshold_a input[type=number]")).to_have_value("90")

    textbox(page, "txt2img_prompt").fill("a cube\nSteps: 2, Seed: 7, Size: 32x32")
    page.locator("#txt2img_paste").click()
    expect(enabled).not_to_be_checked()  # an infotext without the unit's entry turns it off
