"""``modules.scripts``: loading script files, runners per tab, the UI argument layout, script-info and API args."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest

from modules import extensions, script_callbacks, scripts
from modules.errors import InvalidRequest
from modules.paths import ROOT
from modules.scripts import ScriptArgsError
from tests.extensions.conftest import ExtEnv, module_of


def titles(found: list[scripts.Script]) -> list[str]:
    return [s.title() for s in found]


def test_load_order_basedir_and_sys_path(ext_env: ExtEnv, loaded: list[extensions.Extension]) -> None:
    assert [d.script_class.__name__ for d in scripts.scripts_data] == [
        "TestAlwaysOn", "TestSelectable", "TestTxt2imgOnly", "BrokenAlwaysOn"], "metadata Before= moves test_ext first"
    module = module_of("Test AlwaysOn")
    ext_dir = str(ext_env.paths.extensions_dir / "test_ext")
    loaded_from = module.BASEDIR
    assert loaded_from == ext_dir, "basedir() is the extension folder while its scripts load"
    assert module.GREETING == "hello from test_ext", "the extension folder is on sys.path during import"
    assert scripts.basedir() == str(ROOT)
    assert ext_dir not in sys.path
    assert scripts.script_extension[scripts.scripts_data[0].path] == "test_ext"


def test_failing_script_file_is_reported_and_skipped(ext_env: ExtEnv, caplog: pytest.LogCaptureFixture) -> None:
    ext_env.add("test_ext")
    ext_env.add("broken_ext")
    with caplog.at_level(logging.ERROR):
        scripts.load_scripts(ext_env.list(), builtin_scripts_dir=ext_env.builtin_dir)
    assert [(e.extension, Path(e.path).name, e.message) for e in scripts.load_errors] == [
        ("broken_ext", "broken_import.py", "ImportError: broken_ext needs a package that is not installed")]
    assert "Extension broken_ext: script broken_import.py could not be loaded" in caplog.text
    registered = [c.script for c in script_callbacks.ordered_callbacks("cfg_denoiser")]
    assert not any(s.endswith("broken_import.py") for s in registered), "a failed file's callbacks are dropped"
    assert [Path(s).name for s in registered] == ["broken_process.py", "test_script.py"]


def test_repository_scripts_load_first_and_inactive_extensions_not_at_all(ext_env: ExtEnv) -> None:
    repo_scripts = ext_env.builtin_dir / "repo_scripts"
    repo_scripts.mkdir()
    (repo_scripts / "zz_builtin.py").write_text(
        "from modules import scripts\n\n\nclass Builtin(scripts.Script):\n    def title(self):\n"
        "        return 'Builtin Script'\n")
    ext_env.add("test_ext")
    ext_env.add("broken_ext")
    ext_env.opts.set("disabled_extensions", ["broken_ext"])
    scripts.load_scripts(ext_env.list(), builtin_scripts_dir=repo_scripts)
    assert [d.script_class.__name__ for d in scripts.scripts_data] == [
        "Builtin", "TestAlwaysOn", "TestSelectable", "TestTxt2imgOnly"]
    assert scripts.describe_script(scripts.scripts_txt2img.title_map["builtin script"]) == \
        'built-in, script "Builtin Script" (zz_builtin.py)'


def test_runners_sort_scripts_per_tab(loaded: list[extensions.Extension]) -> None:
    t2i, i2i = scripts.scripts_txt2img, scripts.scripts_img2img
    assert titles(t2i.alwayson_scripts) == ["Test AlwaysOn", "Broken AlwaysOn"]
    assert titles(t2i.selectable_scripts) == ["Test Selectable", "Test Txt2img Only"]
    assert titles(i2i.selectable_scripts) == ["Test Selectable"]
    script = t2i.alwayson_scripts[0]
    assert script.name == "test alwayson" and script.alwayson and script.is_txt2img and not script.is_img2img
    assert i2i.alwayson_scripts[0].is_img2img and i2i.alwayson_scripts[0].tabname == "img2img"
    assert script.elem_id("strength") == "script_txt2img_test_alwayson_strength"
    assert t2i.title_map["test txt2img only"].elem_id("x") == "script_test_txt2img_only_x"


def test_setup_ui_lays_out_one_flat_argument_list(loaded: list[extensions.Extension]) -> None:
    runner = scripts.scripts_txt2img
    with gr.Blocks():
        inputs = runner.setup_ui()
    dropdown = inputs[0]
    assert isinstance(dropdown, gr.Dropdown) and dropdown.label == "Script" and dropdown.type == "index"
    assert [c[0] for c in dropdown.choices] == ["None", "Test Selectable", "Test Txt2img Only"]
    always, broken = runner.alwayson_scripts
    selectable = runner.selectable_scripts[0]
    assert (always.args_from, always.args_to) == (1, 4)
    assert (broken.args_from, broken.args_to) == (4, 4)
    assert (selectable.args_from, selectable.args_to) == (4, 5)
    assert [c.label for c in inputs[1:]] == ["Test strength", "Test enabled", "Test mode", "Test note"]
    assert selectable.group is not None and selectable.group.visible is False
    assert runner.default_script_args() == [0, 0.5, True, "fast", "default note"]


def test_script_info_reads_the_controls(loaded: list[extensions.Extension]) -> None:
    info = scripts.script_info()
    by_key = {(i["name"], i["is_img2img"]): i for i in info}
    assert set(by_key) == {(n, tab) for n in ("test alwayson", "broken alwayson", "test selectable")
                           for tab in (False, True)} | {("test txt2img only", False)}
    always = by_key[("test alwayson", True)]
    assert always["is_alwayson"] is True
    assert always["args"] == [
        {"label": "Test strength", "value": 0.5, "minimum": 0.0, "maximum": 2.0, "step": 0.1, "choices": None},
        {"label": "Test enabled", "value": True, "minimum": None, "maximum": None, "step": None, "choices": None},
        {"label": "Test mode", "value": "fast", "minimum": None, "maximum": None, "step": None,
         "choices": ["fast", "slow"]},
    ]
    assert by_key[("test selectable", False)]["is_alwayson"] is False
    assert scripts.scripts_list() == {"txt2img": ["test selectable", "test txt2img only"],
                                      "img2img": ["test selectable"]}


def test_build_script_args_from_an_api_request(loaded: list[extensions.Extension]) -> None:
    runner = scripts.scripts_txt2img
    selected, values = scripts.build_script_args(runner, alwayson_scripts={"TEST AlwaysOn": {"args": [1.5, False]}})
    assert selected is None and values == [0, 1.5, False, "fast", "default note"]
    selected, values = scripts.build_script_args(runner, script_name="test selectable", script_args=["hello"],
                                                 alwayson_scripts={"test alwayson": {}})
    assert selected is runner.selectable_scripts[0] and values == [1, 0.5, True, "fast", "hello"]
    _, values = scripts.build_script_args(runner, alwayson_scripts={"test alwayson": {"args": [1, 2, 3, 4, 5]}})
    assert values == [0, 1, 2, 3, "default note"], "extra positional args are ignored, as in A1111"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"alwayson_scripts": {"Test Selectable": {"args": []}}}, "'Test Selectable' is a selectable script"),
    ({"alwayson_scripts": {"nope": {"args": []}}},
     "no always-on script named 'nope'; valid names: 'test alwayson', 'broken alwayson'"),
    ({"script_name": "nope"}, "no selectable script named 'nope'; valid names: 'test selectable', 'test txt2img"),
    ({"script_name": "test alwayson"}, "'test alwayson' is an always-on script"),
    ({"alwayson_scripts": {"test alwayson": [1]}}, "must be an object"),
    ({"alwayson_scripts": {"test alwayson": {"args": 1.5}}}, "must be a list"),
])
def test_bad_script_requests_get_clear_errors(loaded: list[extensions.Extension], kwargs: dict,
                                              message: str) -> None:
    with pytest.raises(ScriptArgsError) as err:
        scripts.build_script_args(scripts.scripts_txt2img, **kwargs)
    assert message in str(err.value)
    assert isinstance(err.value, ValueError) and isinstance(err.value, InvalidRequest)
    assert err.value.status_code == 422 and err.value.hint


def test_component_hooks_reach_scripts_and_elem_id_targets(loaded: list[extensions.Extension]) -> None:
    runner = scripts.ScriptRunner()
    seen: list[tuple] = []

    class Watcher(scripts.Script):
        def title(self) -> str:
            return "Watcher"

        def show(self, is_img2img: bool) -> object:
            return scripts.AlwaysVisible

        def __init__(self) -> None:
            self.on_before_component(lambda c: seen.append(("targeted before", c.component)), elem_id="txt2img_seed")
            self.on_after_component(lambda c: seen.append(("targeted after", c.component)), elem_id="txt2img_seed")

        def before_component(self, component: object, **kwargs: object) -> None:
            seen.append(("before", component, kwargs.get("elem_id")))

        def after_component(self, component: object, **kwargs: object) -> None:
            raise RuntimeError("after_component boom")

    data = scripts.ScriptClassData(Watcher, __file__, str(ROOT), sys.modules[__name__])
    runner.initialize_scripts(False, data=[data])
    runner.before_component("seed box", elem_id="txt2img_seed")
    runner.after_component("seed box", elem_id="txt2img_seed")
    runner.before_component("other", elem_id="other")
    assert seen == [("targeted before", "seed box"), ("before", "seed box", "txt2img_seed"),
                    ("targeted after", "seed box"), ("before", "other", "other")]


def test_reload_unloads_and_does_not_duplicate_callbacks(ext_env: ExtEnv,
                                                         loaded: list[extensions.Extension]) -> None:
    old_module = module_of("Test AlwaysOn")
    before = {c: len(script_callbacks.callback_map[c]) for c in script_callbacks.callback_map}
    assert before["callbacks_cfg_denoiser"] == 2
    scripts.reload_scripts(loaded, builtin_scripts_dir=ext_env.builtin_dir)
    assert ("cb:script_unloaded",) in old_module.CALLS
    assert {c: len(script_callbacks.callback_map[c]) for c in script_callbacks.callback_map} == before
    assert module_of("Test AlwaysOn") is not old_module
    script_callbacks.clear_callbacks()
    assert script_callbacks.ordered_callbacks("cfg_denoiser") == []


def test_prepare_api_request_marks_api_jobs_and_skips_ui_only_setup(loaded: list[extensions.Extension]) -> None:
    from modules.processing import StableDiffusionProcessingTxt2Img

    runner = scripts.scripts_txt2img
    calls = module_of("Test AlwaysOn").CALLS
    runner.alwayson_scripts[0].setup_for_ui_only = True
    p = StableDiffusionProcessingTxt2Img(prompt="x")
    request = SimpleNamespace(script_name="test selectable", script_args=["n"],
                              alwayson_scripts={"test alwayson": {"args": [1.2]}})
    scripts.prepare_api_request(p, "txt2img", request)
    assert p.is_api and p.scripts is runner and p.script_args == [1, 1.2, True, "fast", "n"]
    assert calls == [], "setup_for_ui_only scripts are not set up for API requests"

    runner.alwayson_scripts[0].setup_for_ui_only = False
    ui_job = StableDiffusionProcessingTxt2Img(prompt="x")
    ui_job.script_args = [0, 0.7, False, "slow", ""]
    ui_job.scripts = runner
    assert calls == [("setup", 0.7, False, "slow")]
    not_on_img2img = r"no selectable script named 'Test Txt2img Only'; valid names: 'test selectable'\."
    with pytest.raises(ScriptArgsError, match=not_on_img2img):
        scripts.prepare_api_request(StableDiffusionProcessingTxt2Img(prompt="x"), "img2img",
                                    SimpleNamespace(script_name="Test Txt2img Only", script_args=[],
                                                    alwayson_scripts=None))


def test_setup_refusing_the_request_reaches_the_caller_other_setup_errors_do_not(
        loaded: list[extensions.Extension], monkeypatch: pytest.MonkeyPatch) -> None:
    from modules.errors import InvalidRequest
    from modules.processing import StableDiffusionProcessingTxt2Img

    runner = scripts.scripts_txt2img
    script = runner.alwayson_scripts[0]
    monkeypatch.setattr(script, "setup_for_ui_only", False)

    def refuse(p, *args):
        raise InvalidRequest("unit 0 has no picture", "Give it one.")

    monkeypatch.setattr(script, "setup", refuse)
    request = SimpleNamespace(script_name=None, script_args=[], alwayson_scripts={"test alwayson": {"args": [1.2]}})
    with pytest.raises(InvalidRequest, match="no picture"):
        scripts.prepare_api_request(StableDiffusionProcessingTxt2Img(prompt="x"), "txt2img", request)

    monkeypatch.setattr(script, "setup", lambda p, *args: 1 / 0)
    p = StableDiffusionProcessingTxt2Img(prompt="x")
    scripts.prepare_api_request(p, "txt2img", request)  # logged; the job goes on without that script's setup
    assert p.scripts is runner


def test_loading_the_scripts_again_does_not_register_their_callbacks_twice(
        loaded: list[extensions.Extension], tmp_path: Path) -> None:
    def registered() -> list:
        return [c for category in script_callbacks.CATEGORIES for c in script_callbacks.ordered_callbacks(category)
                if c.extension == "test_ext"]

    first = registered()
    assert first, "test_ext registers callbacks when its scripts run"
    scripts.load_scripts(loaded, builtin_scripts_dir=tmp_path / "no-scripts")  # e.g. a second app in one process
    assert len(registered()) == len(first)
