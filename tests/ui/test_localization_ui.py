"""A localization in the running app: a server process started the way ``launch.py`` starts it, with ``de_DE.json``
in an extension's ``localizations/`` folder, a broken ``de_DE.json`` in the data folder's, and ``localization``
set in ``config.json``; checked in headless Chromium (translated button, label and later-added elements, prompt
input and generation untouched) and in the server log (the broken file is named)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ui.conftest import UI_DEFAULTS
from tests.ui.server_process import server_process

expect = pytest.importorskip("playwright.sync_api").expect

GERMAN = {"Generate": "Erzeugen", "Sampling method": "Abtastverfahren", "Prompt": "Eingabe"}
GENERATION_TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, list[str]]]:
    from tests.sd.factory import write_tiny_checkpoint

    data_dir = tmp_path_factory.mktemp("l10n-data")
    ckpt_dir = tmp_path_factory.mktemp("l10n-checkpoints")
    write_tiny_checkpoint("sd1", ckpt_dir, name="tiny-sd1")
    (data_dir / "ui-config.json").write_text(json.dumps(UI_DEFAULTS), encoding="utf8")
    (data_dir / "config.json").write_text(json.dumps({"localization": "de_DE"}), encoding="utf8")
    ext_l10n = data_dir / "extensions" / "lang_de" / "localizations"
    ext_l10n.mkdir(parents=True)
    (ext_l10n / "de_DE.json").write_text(json.dumps(GERMAN), encoding="utf8")
    (data_dir / "localizations").mkdir()
    (data_dir / "localizations" / "de_DE.json").write_text("{not json", encoding="utf8")

    with server_process(data_dir, "--ckpt-dir", str(ckpt_dir)) as server:
        yield f"{server.url}/", data_dir, server.output


def test_the_selected_localization_translates_the_page_and_generation_still_works(
        browser: Any, server: tuple[str, Path, list[str]]) -> None:
    url, data_dir, output = server
    assert f"Localization file {data_dir / 'localizations' / 'de_DE.json'} is skipped" in "".join(output)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    page = context.new_page()
    try:
        page.goto(url)
        page.locator("#tab_txt2img").wait_for(state="visible")
        expect(page.locator("#txt2img_generate")).to_have_text("Erzeugen")
        expect(page.locator("#tab_txt2img").get_by_text("Abtastverfahren", exact=True).first).to_be_visible()
        expect(page.locator("#tab_txt2img").get_by_text("Sampling method", exact=True)).to_have_count(0)

        # elements added later are translated too: text and placeholder
        page.evaluate("""() => {
            const box = document.createElement('div'); box.id = 'l10n_probe';
            box.innerHTML = '<span> Generate </span><input placeholder="Prompt" value="Generate">';
            document.querySelector('gradio-app').appendChild(box);
        }""")
        expect(page.locator("#l10n_probe span")).to_have_text(" Erzeugen ")
        expect(page.locator("#l10n_probe input")).to_have_attribute("placeholder", "Eingabe")
        expect(page.locator("#l10n_probe input")).to_have_value("Generate")

        # what the user types is left alone, and generating still works
        prompt = page.locator("#txt2img_prompt textarea")
        prompt.fill("Generate")
        expect(prompt).to_have_value("Generate")
        page.locator("#txt2img_generate").click()
        expect(page.locator("#txt2img_gallery img").first).to_be_visible(timeout=GENERATION_TIMEOUT_MS)
        expect(page.locator("#txt2img_generation_info")).to_contain_text("Generate", timeout=GENERATION_TIMEOUT_MS)
        expect(page.locator("#txt2img_generation_info")).to_contain_text("Steps: 2")
        expect(prompt).to_have_value("Generate")
    finally:
        context.close()
