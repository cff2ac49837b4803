"""Acceptance of the extension system in the running app (issue #8): a real server process started the way
``launch.py`` starts it, with the fixture extensions ``test_ext`` and ``broken_ext`` in its data folder, checked over
real HTTP and in headless Chromium. The last test disables ``test_ext`` with "Apply and restart UI" and checks that
everything it brought is gone, so the tests of this module run in file order on one server.

The copy of ``test_ext`` gets one more script file, ``scripts/app_wiring.py`` (below): a route added in
``on_app_started``, a tab built as a real ``gr.Blocks`` and a setting from ``on_ui_settings``; the fixture's own
``on_ui_tabs`` returns a string instead of a ``gr.Blocks``, which must become a message naming the extension.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.ui.conftest import UI_DEFAULTS, open_tab
from tests.ui.server_process import ServerProcess, server_process

expect = pytest.importorskip("playwright.sync_api").expect

FIXTURES = ROOT / "tests" / "fixtures" / "extensions"
BUILTIN = {folder.name for folder in (ROOT / "extensions").iterdir() if (folder / "scripts").is_dir()}
RESTART_TIMEOUT_S = 120
GENERATION_TIMEOUT_MS = 120_000

APP_WIRING_SCRIPT = '''"""Added by the acceptance test: an on_app_started route, a real tab, an extension setting."""
import gradio as gr

from modules import script_callbacks, shared


def add_routes(demo, app):
    @app.get("/test-ext/hello")
    def hello():
        return {"greeting": "hello from test_ext", "has_demo": demo is not None}


def real_tab():
    with gr.Blocks(analytics_enabled=False) as block:
        gr.Markdown("Content of the test_ext tab", elem_id="test_ext_tab_text")
    return [(block, "Test blocks tab", "test_blocks_tab")]


def settings():
    shared.opts.add_option("test_ext_option", shared.OptionInfo(
        "fast", "Test extension option", section=("test_ext", "Test extension")))


script_callbacks.on_app_started(add_routes)
script_callbacks.on_ui_tabs(real_tab)
script_callbacks.on_ui_settings(settings)
'''


def http(url: str, payload: dict | None = None) -> tuple[int, Any]:
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=300) as r:
            body = r.read().decode("utf8", "replace")
            return r.status, json.loads(body) if "json" in r.headers.get("content-type", "") else body
    except urllib.error.HTTPError as e:
        body = e.read().decode("utf8", "replace")
        return e.code, json.loads(body) if "json" in (e.headers.get("content-type") or "") else body


@pytest.fixture(scope="module")
def ext_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    from tests.sd.factory import write_tiny_checkpoint

    data_dir = tmp_path_factory.mktemp("ext-data")
    ckpt_dir = tmp_path_factory.mktemp("ext-checkpoints")
    write_tiny_checkpoint("sd1", ckpt_dir, name="tiny-sd1")
    (data_dir / "ui-config.json").write_text(json.dumps(UI_DEFAULTS), encoding="utf8")
    for name in ("test_ext", "broken_ext"):
        shutil.copytree(FIXTURES / name, data_dir / "extensions" / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.marker"))
    (data_dir / "extensions" / "test_ext" / "scripts" / "app_wiring.py").write_text(APP_WIRING_SCRIPT)

    flags = ["--ckpt-dir", str(ckpt_dir), "--api", "--test-ext-flag", "--test-ext-value", "from-the-command-line"]
    with server_process(data_dir, *flags) as server:
        yield server


@pytest.fixture
def ext_page(browser: Any, ext_server: ServerProcess) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    tab = context.new_page()
    try:
        tab.goto(ext_server.url + "/")
        tab.locator("#tab_txt2img").wait_for(state="visible")
        yield tab
    finally:
        context.close()


# flags, installer, listings ----------------------------------------------------------------------------------------
def test_preload_flags_parse_and_install_py_ran(ext_server: ServerProcess) -> None:
    status, flags = http(ext_server.url + "/sdapi/v1/cmd-flags")
    assert status == 200
    assert flags["test_ext_flag"] is True and flags["test_ext_value"] == "from-the-command-line"
    marker = ext_server.data_dir / "extensions" / "test_ext" / "installed.marker"
    assert marker.read_text().startswith("pytest installed: True")


def test_scripts_extensions_and_settings_are_listed(ext_server: ServerProcess) -> None:
    status, listed = http(ext_server.url + "/sdapi/v1/scripts")
    assert status == 200
    assert {"test selectable", "test txt2img only", "x/y/z plot"} <= set(listed["txt2img"])
    assert "test selectable" in listed["img2img"] and "test txt2img only" not in listed["img2img"]
    status, info = http(ext_server.url + "/sdapi/v1/script-info")
    alwayson = [s for s in info if s["name"] == "test alwayson" and not s["is_img2img"]]
    assert len(alwayson) == 1 and alwayson[0]["is_alwayson"]
    assert [a["label"] for a in alwayson[0]["args"]] == ["Test strength", "Test enabled", "Test mode"]
    status, exts = http(ext_server.url + "/sdapi/v1/extensions")
    listed = {e["name"]: e["enabled"] for e in exts}
    assert {name: enabled for name, enabled in listed.items() if name not in BUILTIN} == {"broken_ext": True,
                                                                                          "test_ext": True}
    assert all(listed[name] for name in BUILTIN), "the built-in extensions are listed and enabled"
    status, options = http(ext_server.url + "/sdapi/v1/options")
    assert options["test_ext_option"] == "fast"  # declared by on_ui_settings


def test_app_started_route_answers(ext_server: ServerProcess) -> None:
    assert http(ext_server.url + "/test-ext/hello") == (200, {"greeting": "hello from test_ext", "has_demo": True})
    assert http(ext_server.url + "/internal/ping")[1]["status"] == "ok"


def test_alwayson_script_runs_through_the_api_and_broken_ext_is_only_logged(ext_server: ServerProcess) -> None:
    payload = {"prompt": "a cube", "steps": 2, "width": 32, "height": 32, "seed": 5, "sampler_name": "Euler",
               "force_task_id": "task(acceptance)",
               "alwayson_scripts": {"Test AlwaysOn": {"args": [1.5, True, "slow"]}}}
    status, body = http(ext_server.url + "/sdapi/v1/txt2img", payload)
    assert status == 200, body
    assert len(body["images"]) == 1
    assert "Test strength: 1.5" in json.loads(body["info"])["infotexts"][0]
    log = ext_server.log()
    assert "Extension broken_ext: script broken_import.py could not be loaded" in log
    assert 'Error in extension broken_ext, script "Broken AlwaysOn" (broken_process.py), process()' in log
    status, progress = http(ext_server.url + "/internal/progress", {"id_task": "task(acceptance)"})
    assert status == 200 and progress["completed"] is True


# the page ---------------------------------------------------------------------------------------------------------
def test_page_loads_the_extension_scripts_and_style(ext_server: ServerProcess, ext_page: Any) -> None:
    status, html = http(ext_server.url + "/")
    assert status == 200
    assert "window.testExtLoaded = true;" in html and "export const testExtModule = true;" in html
    assert "#test-ext { color: red; }" in html
    page = ext_page
    assert page.evaluate("() => window.testExtLoaded") is True
    assert page.evaluate("() => !!document.querySelector(\"script[type=module][data-source='test_ext/module.mjs']\")")
    color = page.evaluate("""() => {
        const probe = document.createElement('div');
        probe.id = 'test-ext';
        document.querySelector('gradio-app').appendChild(probe);
        return getComputedStyle(probe).color;
    }""")
    assert color == "rgb(255, 0, 0)"


def test_extension_tabs_and_load_errors_are_shown(ext_page: Any) -> None:
    page = ext_page
    open_tab(page, "tab_test_blocks_tab")
    expect(page.locator("#test_ext_tab_text")).to_contain_text("Content of the test_ext tab")
    open_tab(page, "tab_test_tab")  # the fixture's entry is not a gr.Blocks: a message names the extension
    expect(page.locator("#tab_test_tab_error")).to_contain_text("test_ext")
    open_tab(page, "tab_extensions")  # the script of broken_ext that failed to load is named in the list
    row = page.locator('#extensions_installed_table tr[data-extension="broken_ext"] td')
    expect(row.nth(1)).to_contain_text("broken_import.py failed to load: ImportError")


def test_txt2img_ui_passes_the_alwayson_controls_to_the_script(ext_page: Any) -> None:
    page = ext_page
    strength = page.locator('input[aria-label="number input for Test strength"]').first
    strength.fill("1.3")
    strength.press("Enter")
    page.locator("#txt2img_prompt textarea").fill("a cube")
    page.locator("#txt2img_generate").click()
    expect(page.locator("#txt2img_generation_info")).to_contain_text("Test strength: 1.3",
                                                                      timeout=GENERATION_TIMEOUT_MS)
    expect(page.locator("#txt2img_gallery img").first).to_be_visible()


# last: disable test_ext and restart -------------------------------------------------------------------------------
def _wait_for_new_build(page: Any, old_build: str, server: ServerProcess) -> None:
    deadline = time.time() + RESTART_TIMEOUT_S
    while time.time() < deadline:
        try:
            build = page.evaluate("() => window.atelierServerBuild || null")
            if build and build != old_build and page.locator("#tab_txt2img").is_visible():
                return
        except Exception:  # the page is navigating
            pass
        time.sleep(0.5)
    ping = http(server.url + "/internal/ping")
    raise AssertionError(f"the page did not reload onto a rebuilt app; ping: {ping}; page: {page.content()[:300]}; "
                         f"server log:\n{server.log()[-3000:]}")


def _uncheck_for_good(page: Any, box: Any) -> None:
    """Uncheck, and again if the list's refresh on page load lands afterwards and checks the box again."""
    steady = 0
    deadline = time.time() + 20
    while steady < 4 and time.time() < deadline:
        if box.is_checked():
            box.uncheck()
            steady = 0
        else:
            steady += 1
        page.wait_for_timeout(250)
    expect(box).not_to_be_checked()


def test_disable_and_restart_removes_everything_test_ext_brought(ext_server: ServerProcess, ext_page: Any) -> None:
    page = ext_page
    old_build = page.evaluate("() => window.atelierServerBuild")
    open_tab(page, "tab_extensions")
    box = page.locator("#extensions_enabled label", has_text="test_ext").locator("input")
    expect(box).to_be_checked()
    _uncheck_for_good(page, box)
    page.locator("#extensions_apply_restart").click()
    _wait_for_new_build(page, old_build, ext_server)
    saved = json.loads((ext_server.data_dir / "config.json").read_text(encoding="utf8"))
    assert saved["disabled_extensions"] == ["test_ext"]

    assert page.locator("#tab_test_tab-button").count() == 0
    assert page.locator("#tab_test_blocks_tab-button").count() == 0
    assert page.evaluate("() => window.testExtLoaded === undefined")
    assert page.locator("#tab_extensions-button").count() == 1  # the rest of the UI is back
    status, html = http(ext_server.url + "/")
    assert "testExtLoaded" not in html and "#test-ext { color: red; }" not in html
    assert http(ext_server.url + "/test-ext/hello")[0] == 404
    listed = http(ext_server.url + "/sdapi/v1/scripts")[1]
    assert "test selectable" not in listed["txt2img"] and "x/y/z plot" in listed["txt2img"]
    names = {s["name"] for s in http(ext_server.url + "/sdapi/v1/script-info")[1]}
    assert "test alwayson" not in names and "broken alwayson" in names
    status, body = http(ext_server.url + "/sdapi/v1/txt2img",
                        {"prompt": "a", "steps": 2, "width": 32, "height": 32,
                         "alwayson_scripts": {"Test AlwaysOn": {"args": [1.0]}}})
    assert status == 422 and "Test AlwaysOn" in json.dumps(body)
    exts = {e["name"]: e["enabled"] for e in http(ext_server.url + "/sdapi/v1/extensions")[1]}
    assert {name: enabled for name, enabled in exts.items() if name not in BUILTIN} == {"broken_ext": True,
                                                                                        "test_ext": False}
