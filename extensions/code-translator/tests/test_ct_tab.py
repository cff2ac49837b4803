"""The extension loaded the way Atelier loads it: ``modules.scripts`` runs scripts/code_translator_tab.py, whose
callbacks add the settings, the route (``on_app_started``) and the tab; and the tab's layout (``gr.Code`` editors,
password key field, Stop cancelling Translate)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

EXTENSION = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(EXTENSION))

from modules.cmd_args import parse_args  # noqa: E402


def test_extension_loads_like_any_other(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """modules.scripts runs scripts/code_translator_tab.py; its callbacks add the settings, the route and the tab."""
    import gradio as gr
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from modules import extensions, script_callbacks, scripts, shared
    from modules.options import Options
    from modules.paths import paths_from_args
    from modules.shared_options import options_templates

    args = parse_args(["--data-dir", str(tmp_path)], environ={})
    opts = Options(options_templates)
    paths = paths_from_args(args)
    for name, value in (("opts", opts), ("paths", paths), ("cmd_opts", args)):
        monkeypatch.setattr(shared, name, value)
    for name in ("scripts_data", "load_errors", "scripts_txt2img", "scripts_img2img", "current_basedir"):
        monkeypatch.setattr(scripts, name, getattr(scripts, name))
    monkeypatch.setattr(scripts, "script_extension", dict(scripts.script_extension))
    found = extensions.list_extensions(paths, opts, args, builtin_dir=EXTENSION.parent)
    ours = [ext for ext in found if ext.name == "code-translator"]
    assert len(ours) == 1 and ours[0].is_builtin and ours[0].active
    script_file = str(EXTENSION / "scripts" / "code_translator_tab.py")
    script_callbacks.remove_callbacks_for_script(script_file)  # left by an app an earlier test started, if any
    try:
        scripts.load_scripts(ours, builtin_scripts_dir=tmp_path / "no-scripts")
        assert not scripts.load_errors
        script_callbacks.ui_settings_callback()
        assert opts.code_translator_base_url == "http://127.0.0.1:8080/v1"
        app = FastAPI()
        script_callbacks.app_started_callback(None, app)
        assert TestClient(app).get("/code-translator/v1/languages").status_code == 200
        ((tab, title, elem_id),) = [entry for owner, entry in script_callbacks.ui_tabs_with_owners()
                                    if owner == "code-translator"]
    finally:
        script_callbacks.remove_callbacks_for_script(script_file)
    assert not [cb for category in ("ui_tabs", "ui_settings", "app_started")
                for cb in script_callbacks.ordered_callbacks(category) if cb.extension == "code-translator"]
    assert (title, elem_id) == ("Code translator", "code_translator")
    assert isinstance(tab, gr.Blocks)
    codes = {c.elem_id: c for c in tab.blocks.values() if isinstance(c, gr.Code)}
    assert set(codes) == {"code_translator_input", "code_translator_output"}
    assert codes["code_translator_output"].interactive is False and codes["code_translator_input"].interactive
    key = next(c for c in tab.blocks.values() if getattr(c, "elem_id", None) == "code_translator_api_key")
    assert key.type == "password" and key.value == ""
    dropdowns = {c.elem_id: c for c in tab.blocks.values() if isinstance(c, gr.Dropdown)}
    assert len(dropdowns["code_translator_output_language"].choices) >= 47
    stop = next(c for c in tab.blocks.values() if getattr(c, "elem_id", None) == "code_translator_stop")
    translate = next(c for c in tab.blocks.values() if getattr(c, "elem_id", None) == "code_translator_translate")
    config = tab.config["dependencies"]
    translate_event = next(d["id"] for d in config if d["targets"][0][0] == translate._id)
    assert any(translate_event in d["cancels"] for d in config if d["targets"][0][0] == stop._id)
