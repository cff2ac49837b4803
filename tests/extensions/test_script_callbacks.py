"""``modules.script_callbacks``: names, ordering by metadata.ini, error isolation, removal, every call function."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from PIL import Image

from modules import images, script_callbacks
from modules.extensions import ExtensionMetadata
from modules.script_callbacks import CallbackOwner


def names(category: str) -> list[str]:
    return [c.name for c in script_callbacks.ordered_callbacks(category)]


def test_names_say_who_registered(tmp_path: Path) -> None:
    script_callbacks.on_model_loaded(lambda m: None)
    script_callbacks.on_model_loaded(lambda m: None)
    script_callbacks.on_model_loaded(lambda m: None, name="named")
    owner = CallbackOwner("my_ext", str(tmp_path / "scripts" / "s.py"))
    with script_callbacks.loading_script(owner):
        script_callbacks.on_model_loaded(lambda m: None)
    assert names("model_loaded") == [
        "atelier/test_script_callbacks.py/model_loaded", "atelier/test_script_callbacks.py/model_loaded-2",
        "atelier/test_script_callbacks.py/model_loaded/named", "my_ext/s.py/model_loaded"]
    entry = script_callbacks.callback_map["callbacks_model_loaded"][-1]
    assert entry.extension == "my_ext" and entry.script == owner.filename
    with pytest.raises(ValueError, match="unknown callback category"):
        script_callbacks.add_callback("no_such_event", lambda: None)
    with pytest.raises(TypeError, match="must be callable"):
        script_callbacks.on_app_started("not a function")


def test_metadata_before_after_orders_callbacks(tmp_path: Path) -> None:
    calls: list[str] = []
    for ext, meta in (("alpha", "[callbacks/alpha/a.py/model_loaded]\nAfter = gamma\n"),
                      ("beta", ""), ("gamma", ""),
                      ("delta", "[callbacks/delta/a.py/model_loaded]\nBefore = alpha/a.py/model_loaded\n")):
        folder = tmp_path / ext
        folder.mkdir()
        (folder / "metadata.ini").write_text(meta)
        owner = CallbackOwner(ext, str(folder / "a.py"), ExtensionMetadata(folder, ext))
        with script_callbacks.loading_script(owner):
            script_callbacks.on_model_loaded(lambda m, ext=ext: calls.append(ext))
    script_callbacks.model_loaded_callback("model")
    assert calls == ["beta", "gamma", "delta", "alpha"]


def test_one_failing_callback_does_not_stop_the_others(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    seen: list[int] = []

    def broken(params: object) -> None:
        raise RuntimeError("callback boom")

    with script_callbacks.loading_script(CallbackOwner("bad_ext", str(tmp_path / "bad.py"))):
        script_callbacks.on_cfg_denoiser(broken)
    script_callbacks.on_cfg_denoiser(lambda params: seen.append(params.sampling_step))
    with caplog.at_level(logging.ERROR):
        script_callbacks.cfg_denoiser_callback(script_callbacks.CFGDenoiserParams(
            x=None, image_cond=None, sigma=None, sampling_step=3, total_sampling_steps=4, text_cond=None,
            text_uncond=None))
    assert seen == [3]
    assert "cfg_denoiser callback bad_ext/bad.py/cfg_denoiser (extension bad_ext)" in caplog.text
    assert "callback boom" in caplog.text


def test_removal_by_script_function_and_clear(tmp_path: Path) -> None:
    def keep(*a: object) -> None:
        pass

    def drop(*a: object) -> None:
        pass

    script_file = tmp_path / "scripts" / "x.py"
    with script_callbacks.loading_script(CallbackOwner("x_ext", str(script_file))):
        script_callbacks.on_app_started(keep)
        script_callbacks.on_image_saved(keep)
        script_callbacks.remove_current_script_callbacks()
        script_callbacks.on_ui_settings(keep)
    script_callbacks.on_app_started(drop)
    script_callbacks.on_before_ui(drop)
    script_callbacks.on_before_ui(keep)
    assert [c.extension for c in script_callbacks.ordered_callbacks("app_started")] == [""]
    assert names("ui_settings") == ["x_ext/x.py/ui_settings"]
    script_callbacks.remove_callbacks_for_function(drop)
    assert names("app_started") == [] and len(names("before_ui")) == 1
    script_callbacks.remove_callbacks_for_script(str(script_file))
    assert names("ui_settings") == []
    script_callbacks.clear_callbacks()
    assert all(not entries for entries in script_callbacks.callback_map.values())


def test_every_call_function_reaches_its_callbacks() -> None:
    got: dict[str, tuple] = {}

    def recorder(key: str):
        return lambda *args, **kwargs: got.__setitem__(key, (args, kwargs))

    simple = {
        "app_started": (script_callbacks.on_app_started, script_callbacks.app_started_callback, ("demo", "app")),
        "on_reload": (script_callbacks.on_before_reload, script_callbacks.app_reload_callback, ()),
        "model_loaded": (script_callbacks.on_model_loaded, script_callbacks.model_loaded_callback, ("m",)),
        "ui_settings": (script_callbacks.on_ui_settings, script_callbacks.ui_settings_callback, ()),
        "ui_train_tabs": (script_callbacks.on_ui_train_tabs, script_callbacks.ui_train_tabs_callback,
                          (script_callbacks.UiTrainTabParams("preview"),)),
        "before_image_saved": (script_callbacks.on_before_image_saved, script_callbacks.before_image_saved_callback,
                               ("params",)),
        "image_saved": (script_callbacks.on_image_saved, script_callbacks.image_saved_callback, ("params",)),
        "extra_noise": (script_callbacks.on_extra_noise, script_callbacks.extra_noise_callback, ("n",)),
        "cfg_denoised": (script_callbacks.on_cfg_denoised, script_callbacks.cfg_denoised_callback, ("d",)),
        "cfg_after_cfg": (script_callbacks.on_cfg_after_cfg, script_callbacks.cfg_after_cfg_callback, ("a",)),
        "before_component": (script_callbacks.on_before_component, script_callbacks.before_component_callback,
                             ("comp",)),
        "after_component": (script_callbacks.on_after_component, script_callbacks.after_component_callback,
                            ("comp",)),
        "script_unloaded": (script_callbacks.on_script_unloaded, script_callbacks.script_unloaded_callback, ()),
        "before_ui": (script_callbacks.on_before_ui, script_callbacks.before_ui_callback, ()),
    }
    for key, (register, _, _) in simple.items():
        register(recorder(key))
    for key, (_, call, args) in simple.items():
        call(*args, **({"elem_id": "x"} if key.endswith("component") else {}))
        assert got[key][0] == args, key
    assert got["before_component"][1] == {"elem_id": "x"}

    script_callbacks.on_ui_tabs(lambda: [("blocks", "Tab A", "tab_a")])
    script_callbacks.on_ui_tabs(lambda: None)
    assert script_callbacks.ui_tabs_callback() == [("blocks", "Tab A", "tab_a")]
    script_callbacks.on_list_optimizers(lambda found: found.append("opt"))
    script_callbacks.on_list_unets(lambda found: found.append("unet"))
    assert script_callbacks.list_optimizers_callback() == ["opt"]
    assert script_callbacks.list_unets_callback() == ["unet"]
    script_callbacks.on_infotext_pasted(lambda text, params: params.update(seen=text))
    params: dict = {}
    script_callbacks.infotext_pasted_callback("Steps: 2", params)
    assert params == {"seen": "Steps: 2"}
    script_callbacks.on_image_grid(lambda p: setattr(p, "rows", 1))
    grid = script_callbacks.ImageGridLoopParams(["a", "b"], cols=1, rows=2)
    script_callbacks.image_grid_callback(grid)
    assert grid.rows == 1
    script_callbacks.on_before_token_counter(lambda p: setattr(p, "prompt", p.prompt.upper()))
    counter = script_callbacks.BeforeTokenCounterParams("a cat", steps=20, styles=[], is_positive=False)
    script_callbacks.before_token_counter_callback(counter)
    assert counter.prompt == "A CAT"


def test_unload_and_before_ui_run_last_registered_first() -> None:
    order: list[int] = []
    for i in range(3):
        script_callbacks.on_script_unloaded(lambda i=i: order.append(i))
        script_callbacks.on_before_ui(lambda i=i: order.append(10 + i))
        script_callbacks.on_ui_settings(lambda i=i: order.append(20 + i))
    script_callbacks.script_unloaded_callback()
    script_callbacks.before_ui_callback()
    script_callbacks.ui_settings_callback()
    assert order == [2, 1, 0, 12, 11, 10, 20, 21, 22]


def test_images_save_image_uses_the_registered_save_callbacks(tmp_path: Path) -> None:
    """``images.save_image`` without explicit hooks calls this module's callbacks (A1111's behaviour)."""
    saved: list[str] = []

    def before(params: script_callbacks.ImageSaveParams) -> None:
        params.pnginfo["extension_note"] = "added before saving"

    script_callbacks.on_before_image_saved(before)
    script_callbacks.on_image_saved(lambda params: saved.append(params.filename))
    path, _ = images.save_image(Image.new("RGB", (8, 8)), str(tmp_path), "", seed=1, prompt="x", info="Steps: 1")
    assert saved == [path]
    with Image.open(path) as picture:
        assert picture.info["extension_note"] == "added before saving"
        assert picture.info["parameters"] == "Steps: 1"


def test_image_grid_and_infotext_pasted_callbacks_reach_their_callers() -> None:
    """``image_grid`` lets ``on_image_grid`` change the layout; the infotext parser runs ``on_infotext_pasted``."""
    from modules.infotext import parse_generation_parameters

    def one_row(params: script_callbacks.ImageGridLoopParams) -> None:
        params.cols, params.rows = len(params.imgs), 1

    script_callbacks.on_image_grid(one_row)
    script_callbacks.on_infotext_pasted(lambda text, params: params.update({"Pasted by": "test"}))
    grid = images.image_grid([Image.new("RGB", (8, 8))] * 4, rows=2)
    assert grid.size == (32, 8)  # 4x1 instead of the asked 2x2
    assert parse_generation_parameters("a cat\nSteps: 3", skip_fields=[])["Pasted by"] == "test"
