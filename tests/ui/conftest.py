"""Browser tests of the Gradio UI: the real app from ``webui.build_app`` on uvicorn, driven by headless Chromium.

Fixtures other UI test modules use:

* ``ui_server`` (session): ``.url`` (``http://127.0.0.1:<port>/``), ``.ctx`` (the app's ``ApiContext``), ``.paths``,
  ``.data_dir``; started through ``webui.initialize`` with ``--data-dir <tmp>`` and ``--ckpt-dir`` holding a tiny
  random SD1 checkpoint, and a ``ui-config.json`` that makes 64x64 the default size.
* ``browser`` (session): Playwright's sync Chromium at ``/usr/bin/chromium``, headless.
* ``page`` (function): a fresh context and page at ``ui_server.url``, returned once the txt2img tab is visible.

Every test in ``tests/ui`` that needs the browser is skipped, with the reason, when Chromium or Playwright is
missing.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import start_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
UI_DEFAULTS = {"txt2img/Width/value": 64, "txt2img/Height/value": 64, "img2img/Width/value": 64,
               "img2img/Height/value": 64, "txt2img/Sampling steps/value": 2, "img2img/Sampling steps/value": 2}
PAGE_TIMEOUT_MS = 30_000
HERE = Path(__file__).resolve().parent


def _missing_browser_reason() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"UI tests need Chromium at {CHROMIUM} (install the distribution's chromium package)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "UI tests need the playwright package (pip install -r requirements-test.txt)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _missing_browser_reason()
    if reason is None:
        return
    if os.environ.get("ATELIER_REQUIRE_BROWSER"):  # set by .ci/run: in CI a missing browser must fail, not skip
        raise pytest.UsageError(f"ATELIER_REQUIRE_BROWSER is set but {reason}.")
    for item in items:
        uses_browser = {"browser", "page"} & set(getattr(item, "fixturenames", ()))
        if uses_browser and Path(str(item.fspath)).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.skip(reason=reason))


@dataclass
class UIServer:
    """The running app: where to point the browser and the objects behind it, for assertions."""

    url: str
    ctx: Any
    paths: Any
    data_dir: Path
    args: Any
    app: Any
    server: Any
    thread: threading.Thread


SCRIPT_GLOBALS = ("scripts_data", "load_errors", "scripts_txt2img", "scripts_img2img", "current_basedir")


def _snapshot_shared() -> dict[str, Any]:
    """``modules.shared`` plus what start-up loads into ``modules.scripts`` and ``modules.extensions``."""
    from modules import extensions, scripts, shared

    saved = {k: v for k, v in vars(shared).items() if not k.startswith("__")}
    saved["<scripts>"] = {name: getattr(scripts, name) for name in SCRIPT_GLOBALS}
    saved["<script_extension>"] = dict(scripts.script_extension)
    saved["<extensions>"] = list(extensions.extensions)
    return saved


def _restore_shared(saved: dict[str, Any]) -> None:
    """Put the snapshot back and forget every callback the app's scripts registered."""
    from modules import extensions, script_callbacks, scripts, shared

    saved = dict(saved)
    for name, value in saved.pop("<scripts>").items():
        setattr(scripts, name, value)
    scripts.script_extension.clear()
    scripts.script_extension.update(saved.pop("<script_extension>"))
    extensions.extensions = saved.pop("<extensions>")
    script_callbacks.clear_callbacks()
    for key in [k for k in vars(shared) if not k.startswith("__") and k not in saved]:
        delattr(shared, key)
    for key, value in saved.items():
        setattr(shared, key, value)


@pytest.fixture(scope="session")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UIServer]:
    import torch

    from modules import webui
    from tests.sd.factory import write_tiny_checkpoint

    data_dir = tmp_path_factory.mktemp("ui-data")
    ckpt_dir = tmp_path_factory.mktemp("ui-checkpoints")
    write_tiny_checkpoint("sd1", ckpt_dir, name="tiny-sd1")
    (data_dir / "ui-config.json").write_text(json.dumps(UI_DEFAULTS), encoding="utf8")

    saved_shared = _snapshot_shared()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    server = thread = ctx = None
    try:
        args = webui.initialize(["--skip-install", "--data-dir", str(data_dir), "--ckpt-dir", str(ckpt_dir)])
        app = webui.build_app(args)
        ctx = app.state.atelier_context
        url, server, thread = start_app(app, timeout=60)
        yield UIServer(url=f"{url}/", ctx=ctx, paths=ctx.paths, data_dir=Path(ctx.paths.data_dir),
                       args=args, app=app, server=server, thread=thread)
    finally:
        if ctx is not None:
            ctx.queue.interrupt()
        if server is not None and thread is not None:
            server.should_exit = True
            thread.join(15)
        if ctx is not None:
            ctx.queue.shutdown(15)
        torch.set_num_threads(threads)
        _restore_shared(saved_shared)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    reason = _missing_browser_reason()
    if reason is not None:
        pytest.skip(reason)
    yield shared_browser()


_PLAYWRIGHT: dict[str, Any] = {}


def shared_browser() -> Any:
    """The test process's one headless Chromium. Playwright's sync API cannot run twice at once in one thread, and
    test modules outside tests/ui (the built-in extensions' browser tests) need a browser too: they all get this one,
    and open their own contexts or pages in it. Closed when the process exits."""
    if "browser" not in _PLAYWRIGHT:
        from playwright.sync_api import sync_playwright

        playwright = sync_playwright().start()
        _PLAYWRIGHT["playwright"] = playwright
        _PLAYWRIGHT["browser"] = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                            args=CHROMIUM_ARGS)
        atexit.register(_close_shared_browser)
    return _PLAYWRIGHT["browser"]


def _close_shared_browser() -> None:
    browser, playwright = _PLAYWRIGHT.pop("browser", None), _PLAYWRIGHT.pop("playwright", None)
    with contextlib.suppress(Exception):
        if browser is not None:
            browser.close()
        if playwright is not None:
            playwright.stop()


# helpers for the test modules ---------------------------------------------------------------------------------------
def set_number(page: Any, elem_id: str, value: float) -> None:
    """Type into the number box of a slider or number field and commit it (as a user pressing Enter)."""
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")
    box.blur()


def number_value(page: Any, elem_id: str) -> float:
    return float(page.locator(f"#{elem_id} input[type=number]").first.input_value())


def textbox(page: Any, elem_id: str) -> Any:
    return page.locator(f"#{elem_id} textarea, #{elem_id} input[type=text]").first


def dropdown_value(page: Any, elem_id: str) -> str:
    return page.locator(f"#{elem_id} input").first.input_value()


def open_tab(page: Any, tab_id: str) -> None:
    page.locator(f"#{tab_id}-button").click()
    page.locator(f"#{tab_id}").wait_for(state="visible")


@pytest.fixture
def page(browser: Any, ui_server: UIServer) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    tab = context.new_page()
    try:
        tab.goto(ui_server.url)
        tab.locator("#tab_txt2img").wait_for(state="visible")
        yield tab
    finally:
        context.close()
