"""End to end: Atelier started as its own process loads the built-in AFNO lab like any extension; its routes answer
with the shipped model, and in a browser the tab rolls out a field and shows the error. Slow (app start-up)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from afno_lab.store import SHIPPED_DIR  # noqa: E402

from tests.ui.server_process import ServerProcess, server_process  # noqa: E402

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"
SHIPPED = sorted(SHIPPED_DIR.glob("*.safetensors"))


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("afno_app")
    with server_process(data_dir, "--skip-install", "--skip-prepare-environment", "--api") as server:
        yield server


@pytest.mark.skipif(not SHIPPED, reason="no shipped model in extensions/afno/models")
def test_routes_serve_the_shipped_model(app: ServerProcess) -> None:
    models = requests.get(f"{app.url}/afno/v1/models", timeout=30).json()
    assert models["default"] == SHIPPED[0].name
    response = requests.post(f"{app.url}/afno/v1/rollout",
                             json={"seed": 7, "t_start": 12, "steps": 2, "with_truth": True}, timeout=120)
    assert response.status_code == 200, response.text
    body = response.json()
    assert np.asarray(body["prediction"]).shape == (2, 64, 64)
    assert body["rel_l2"][0] < 0.1  # the trained model is far better than chance (≈ 1.4) on an unseen field
    progress = requests.post(f"{app.url}/internal/progress", json={"id_task": body["task_id"]}, timeout=10).json()
    assert progress["completed"] is True  # the rollout ran on the app's shared job queue


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"needs Chromium at {CHROMIUM}")
def test_tab_rolls_out_in_the_browser(app: ServerProcess) -> None:
    from tests.ui.conftest import shared_browser  # one Chromium per test process (Playwright's sync API)

    context = shared_browser().new_context(viewport={"width": 1920, "height": 1080})
    try:
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(app.url + "/")
        page.locator("#tab_txt2img").wait_for(state="visible")
        # with many extension tabs Gradio may fold this one into its overflow menu: click it by script
        page.locator("#tab_afno_lab-button").evaluate("button => button.click()")
        page.locator("#afno_rollout_button").click()
        message = page.locator("#afno_rollout_message")
        message.get_by_text("Relative L2 at lead 1").wait_for()
        assert page.locator("#afno_grid img").count() == 1
        assert page.locator("#afno_gif img").count() == 1
    finally:
        context.close()
