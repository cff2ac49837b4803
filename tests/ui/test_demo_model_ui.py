"""The browser on the shipped demo model: pick it in the checkpoint dropdown, generate, and the picture shows the
prompt (judged by ``modules.training.evaluate.analyze`` on the saved PNG)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from modules.paths import DEMO_CHECKPOINT_DIR
from modules.training.demo_model import CHECKPOINT_FILE
from modules.training.evaluate import analyze
from tests.ui.test_txt2img_ui import fill_form, saved_images, wait_for_result

expect = pytest.importorskip("playwright.sync_api").expect
pytestmark = pytest.mark.skipif(not (DEMO_CHECKPOINT_DIR / CHECKPOINT_FILE).is_file(),
                                reason="the demo checkpoint is not in this checkout")
DEMO_NAME = Path(CHECKPOINT_FILE).stem


def test_generating_with_the_demo_model_draws_the_prompt(page: Any, ui_server: Any) -> None:
    ctx = ui_server.ctx
    original = ctx.opts.sd_model_checkpoint
    try:
        dropdown = page.locator("#setting_sd_model_checkpoint input")
        dropdown.click()
        page.get_by_role("option", name=re.compile(DEMO_NAME)).click()
        deadline = time.monotonic() + 10
        while DEMO_NAME not in ctx.opts.sd_model_checkpoint and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ctx.opts.sd_model_checkpoint.startswith(DEMO_NAME)

        before = saved_images(ui_server.data_dir)
        fill_form(page, "a blue star on a yellow background, center", size=64, steps=20, seed=4)
        page.locator("#txt2img_generate").click()
        wait_for_result(page)
        expect(page.locator("#txt2img_generation_info")).to_contain_text(f"Model: {DEMO_NAME}")
        new = saved_images(ui_server.data_dir) - before
        assert len(new) == 1, new
        with Image.open(new.pop()) as saved:
            seen = analyze(np.asarray(saved.convert("RGB")))
        assert (seen.colour, seen.background) == ("blue", "yellow"), seen
    finally:
        ctx.opts.set("sd_model_checkpoint", original)
