"""The "Script" dropdown of txt2img in a real browser: built-in scripts are loaded at start-up, their controls show
only when chosen, and Generate runs the chosen script (X/Y/Z plot → a labelled grid in the gallery)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.ui.conftest import textbox
from tests.ui.test_txt2img_ui import GENERATION_TIMEOUT_MS, fill_form

expect = pytest.importorskip("playwright.sync_api").expect

XYZ = "script_txt2img_xyz_plot"


def choose(page: Any, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").first.click()
    page.get_by_role("option", name=option, exact=True).click()


def test_xyz_plot_from_the_script_dropdown_makes_a_grid(page: Any, ui_server: Any) -> None:
    grids_dir = ui_server.data_dir / "outputs" / "txt2img-grids"
    before = set(grids_dir.rglob("*.png")) if grids_dir.exists() else set()
    expect(page.locator(f"#{XYZ}_x_type")).to_be_hidden()  # a selectable script's controls wait for the choice
    fill_form(page, "a grid of cubes", seed=9)
    choose(page, "txt2img_script_dropdown", "X/Y/Z plot")
    expect(page.locator(f"#{XYZ}_x_type")).to_be_visible()
    choose(page, f"{XYZ}_x_type", "Steps")
    values = textbox(page, f"{XYZ}_x_values")
    values.fill("2,3")
    values.blur()
    page.locator("#txt2img_generate").click()

    info = page.locator("#txt2img_generation_info")
    expect(info).to_contain_text("a grid of cubes", timeout=GENERATION_TIMEOUT_MS)
    first = page.locator("#txt2img_gallery img").first
    expect(first).to_be_visible()
    width, height = first.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert width >= 64 and height > 32, (width, height)  # two 32x32 pictures side by side, with the labels above
    new_grids = set(grids_dir.rglob("*.png")) - before
    assert len(new_grids) == 1
    choose(page, "txt2img_script_dropdown", "None")
    expect(page.locator(f"#{XYZ}_x_type")).to_be_hidden()
