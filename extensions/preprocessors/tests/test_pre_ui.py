"""The Preprocessors tab in a real browser, on the app as ``webui.initialize`` starts it (the extension is found
with the other built-ins): upload, Run, the map appears; a preprocessor without its weights says which file is
missing, next to the knobs that belong to it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atelier_preprocessors import run_preprocessor  # noqa: E402

from modules.training.shapes_dataset import ShapeSpec, render  # noqa: E402

# the browser fixtures of tests/ui (pytest finds fixtures imported into a test module)
from tests.ui.conftest import _missing_browser_reason, browser, open_tab, page, set_number, ui_server  # noqa: E402,F401

expect = pytest.importorskip("playwright.sync_api").expect
pytestmark = pytest.mark.skipif(_missing_browser_reason() is not None, reason=str(_missing_browser_reason()))

SQUARE = render(ShapeSpec("square", "red", "blue", "center", "large"), 64)


def choose(tab: Any, label: str) -> None:
    tab.locator("#pre_module input").first.click()
    tab.get_by_role("option", name=label, exact=True).click()


def test_run_shows_the_map_and_missing_weights_show_a_message(page: Any, ui_server: Any,  # noqa: F811
                                                              tmp_path: Path) -> None:
    picture = tmp_path / "square.png"
    Image.fromarray(SQUARE).save(picture)
    open_tab(page, "tab_preprocessors")
    page.locator("#pre_image input[type=file]").set_input_files(str(picture))
    expect(page.locator("#pre_image img")).to_be_visible()
    set_number(page, "pre_resolution", 64)
    expect(page.locator("#pre_params_canny").first).to_be_visible()  # Gradio nests two divs with the id
    page.locator("#pre_run").click()
    expect(page.locator("#pre_message")).to_contain_text("canny: 64x64 map")
    source = page.locator("#pre_output img").get_attribute("src")
    shown = np.asarray(Image.open(requests.get(source, timeout=30, stream=True).raw).convert("RGB"))
    assert np.array_equal(shown, run_preprocessor("canny", SQUARE, 64))  # the map itself, losslessly

    choose(page, "Soft edges (HED)")
    expect(page.locator("#pre_status")).to_contain_text("ControlNetHED.pth")
    expect(page.locator("#pre_params_hed").first).to_be_visible()
    expect(page.locator("#pre_params_canny").first).to_be_hidden()
    page.locator("#pre_run").click()
    message = page.locator("#pre_message [role=alert]")
    expect(message).to_contain_text("ControlNetHED.pth")
    expect(message).to_contain_text(str(Path(ui_server.paths.models_dir) / "annotators"))
