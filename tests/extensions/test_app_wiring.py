"""The pieces that plug extensions into the running app: page assets in A1111's order, the ``/internal`` routes, and
the server loop that rebuilds the app on "Apply and restart UI" (real uvicorn on 127.0.0.1, real HTTP)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from types import SimpleNamespace
from typing import Any

from fastapi import FastAPI

from modules import ui_assets
from modules.internal_routes import add_internal_routes
from modules.jobs import JobQueue
from modules.server_reload import ServerLoop
from modules.shared_state import State
from tests.conftest import free_port
from tests.extensions.conftest import ExtEnv


def _request(url: str, payload: dict | None = None) -> tuple[int, Any]:
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def test_page_head_has_repository_then_extension_scripts_then_modules(ext_env: ExtEnv) -> None:
    ext_env.add("test_ext")
    ext_env.add("broken_ext")
    head = ui_assets.page_head(ext_env.args("--theme", "dark"), ext_env.list(), "build-1", {"a": "b"})
    own = head.index("data-source='javascript/ui.js'")
    extension_js = head.index("data-source='test_ext/test.js'")
    module = head.index("<script type=\"module\" data-source='test_ext/module.mjs'>")
    assert own < extension_js < module
    assert "window.testExtLoaded = true;" in head and "export const testExtModule = true;" in head
    assert 'window.atelierServerBuild = "build-1";' in head and "window.atelierRestartReload" in head
    assert "searchParams.set('__theme','dark')" in head and 'window.atelierTooltips = {"a": "b"}' in head


def test_disabled_extensions_bring_no_scripts_or_styles(ext_env: ExtEnv) -> None:
    ext_env.add("test_ext")
    ext_env.opts.set("disabled_extensions", ["test_ext"])
    exts = ext_env.list()
    assert "testExtLoaded" not in ui_assets.page_head(ext_env.args(), exts, "b")
    assert ui_assets.css_files(ext_env.paths, exts) == [ui_assets.STYLE_FILE]


def test_style_sheets_root_then_extensions_then_user_css(ext_env: ExtEnv) -> None:
    ext_env.add("test_ext")
    (ext_env.data_dir / "user.css").write_text("body { margin: 0; }")
    found = ui_assets.css_files(ext_env.paths, ext_env.list())
    assert found == [ui_assets.STYLE_FILE, ext_env.paths.extensions_dir / "test_ext" / "style.css",
                     ext_env.data_dir / "user.css"]


def _app(queue: JobQueue, build_id: str) -> FastAPI:
    app = FastAPI()
    add_internal_routes(app, queue, build_id)
    return app


def test_internal_progress_reports_a_finished_job_and_rejects_a_missing_task_id() -> None:
    queue = JobQueue(State())
    port = free_port()
    loop = ServerLoop(_app(queue, "one"), "127.0.0.1", port, rebuild=lambda: None)
    assert loop.start(30)
    try:
        queue.submit(lambda: 42, kind="test", task_id="task(abc)", description="answer").wait(10)
        status, body = _request(f"http://127.0.0.1:{port}/internal/progress", {"id_task": "task(abc)"})
        assert status == 200 and body["completed"] is True and body["progress"] == 1.0
        status, body = _request(f"http://127.0.0.1:{port}/internal/progress",
                                {"id_task": "unknown", "id_live_preview": 3, "live_preview": False})
        assert status == 200 and body["completed"] is False and body["active"] is False
        assert _request(f"http://127.0.0.1:{port}/internal/progress", {"live_preview": True})[0] == 422
    finally:
        loop.stop()
        queue.shutdown(5)


def test_restart_command_serves_a_rebuilt_app_on_the_same_port() -> None:
    queue = JobQueue(State())
    builds = iter(["two", "three"])
    port = free_port()
    loop = ServerLoop(_app(queue, "one"), "127.0.0.1", port, rebuild=lambda: _app(queue, next(builds)))
    state = SimpleNamespace(server_command=None)
    assert loop.start(30)
    watcher = threading.Thread(target=loop.serve_until_stopped, args=(state,), kwargs={"poll_s": 0.05}, daemon=True)
    watcher.start()
    try:
        assert _request(f"http://127.0.0.1:{port}/internal/ping") == (200, {"status": "ok", "build": "one"})
        state.server_command = "restart"
        deadline = time.time() + 30
        answer = None
        while time.time() < deadline:
            try:
                answer = _request(f"http://127.0.0.1:{port}/internal/ping")[1]["build"]
            except OSError:  # between the two servers
                answer = None
            if answer == "two":
                break
            time.sleep(0.1)
        assert answer == "two" and loop.restarts == 1 and state.server_command is None
        state.server_command = "stop"
        watcher.join(20)
        assert not watcher.is_alive() and not loop.running
    finally:
        loop.stop()
        queue.shutdown(5)


def test_a_failing_rebuild_keeps_serving_the_old_app() -> None:
    queue = JobQueue(State())

    def broken() -> FastAPI:
        raise RuntimeError("extension exploded while building the UI")

    port = free_port()
    loop = ServerLoop(_app(queue, "one"), "127.0.0.1", port, rebuild=broken)
    assert loop.start(30)
    try:
        assert loop.restart()
        assert _request(f"http://127.0.0.1:{port}/internal/ping")[1]["build"] == "one"
    finally:
        loop.stop()
        queue.shutdown(5)


def test_component_hooks_reach_callbacks_and_the_current_tabs_scripts(monkeypatch: Any) -> None:
    import gradio as gr

    from modules import script_callbacks, scripts
    from modules.ui_component_hooks import component_hooks

    seen: list[tuple] = []

    class Watcher(scripts.Script):
        def __init__(self) -> None:
            self.on_after_component(lambda on: seen.append(("targeted", on.component.elem_id)), elem_id="watched")

        def title(self) -> str:
            return "Watcher"

        def show(self, is_img2img: bool) -> Any:
            return scripts.AlwaysVisible

    script_callbacks.on_before_component(lambda component, **kw: seen.append(("before", kw.get("elem_id"))))
    script_callbacks.on_after_component(lambda component, **kw: seen.append(("after", component.label)))
    runner = scripts.ScriptRunner()
    runner.initialize_scripts(False, [scripts.ScriptClassData(Watcher, "watcher.py", ".", None)])
    monkeypatch.setattr(scripts, "scripts_current", runner)
    with component_hooks(), gr.Blocks():
        gr.Textbox(label="Watched", elem_id="watched")
    with gr.Blocks():
        gr.Textbox(label="Not watched", elem_id="after-the-hooks")
    assert seen == [("before", "watched"), ("targeted", "watched"), ("after", "Watched")]


def test_token_counter_counts_the_prompt_an_extension_rewrote(ext_env: ExtEnv) -> None:
    from modules import script_callbacks
    from modules.ui_common import UiDefaults, UiEnv
    from modules.ui_generation import token_counter_html

    seen: list[tuple] = []

    def rewrite(params: Any) -> None:
        seen.append((params.prompt, params.steps, params.styles, params.is_positive))
        params.prompt = "cat " * 80

    env = UiEnv(ctx=SimpleNamespace(opts=ext_env.opts), args=None, defaults=UiDefaults(), styles=None)
    assert token_counter_html(env, "a cat", [], 20, False) == "<span class='token-count'>2/75</span>"
    script_callbacks.on_before_token_counter(rewrite)
    assert token_counter_html(env, "a cat", ["Metal"], 12, True) == "<span class='token-count'>80/150</span>"
    assert seen == [("a cat", 12, ["Metal"], False)]


def test_apply_and_restart_needs_extension_access(ext_env: ExtEnv) -> None:
    from modules.ui_extensions import apply_and_restart

    def ctx(*flags: str) -> Any:
        return SimpleNamespace(opts=ext_env.opts, paths=ext_env.paths, args=ext_env.args(*flags),
                               queue=SimpleNamespace(state=State()))

    refused = ctx("--listen")
    assert "--enable-insecure-extension-access" in apply_and_restart(refused, ["test_ext"], [])
    assert refused.queue.state.server_command is None and not ext_env.opts.disabled_extensions
    allowed = ctx("--listen", "--enable-insecure-extension-access")
    assert apply_and_restart(allowed, ["test_ext"], []).endswith("Restarting the UI...")
    assert allowed.queue.state.server_command == "restart"
    saved = json.loads(ext_env.paths.settings_file.read_text(encoding="utf8"))
    assert saved["disabled_extensions"] == ["test_ext"]
