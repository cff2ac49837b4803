"""Settings tab without a browser: `apply_settings` (validation, saving, frozen settings) and the field chosen for
each kind of setting when the tab is built."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest

from modules.options import OptionInfo, Options, options_section
from modules.shared_options import options_templates
from modules.ui_settings import (
    OTHER_SECTION,
    QUICKSETTINGS,
    apply_settings,
    build_setting_component,
    create_settings_tab,
    edited_values,
    group_by_section,
    locked_settings,
)


@pytest.fixture
def opts() -> Options:
    return Options(options_templates)


def test_apply_changes_valid_values_and_saves_them(opts: Options, tmp_path: Path) -> None:
    settings_file = tmp_path / "config.json"
    values = {"jpeg_quality": 95.0, "samples_save": False, "samples_format": "png", "eta_ddim": "0.5"}

    result = apply_settings(opts, values, settings_file)

    assert result.changed == ["jpeg_quality", "samples_save", "eta_ddim"]
    assert result.errors == []
    assert result.message() == "3 settings changed: jpeg_quality, samples_save, eta_ddim."
    assert (opts.jpeg_quality, opts.samples_save, opts.eta_ddim) == (95, False, 0.5)
    assert isinstance(opts.jpeg_quality, int)
    saved = json.loads(settings_file.read_text(encoding="utf8"))
    assert saved["jpeg_quality"] == 95 and saved["samples_save"] is False and saved["eta_ddim"] == 0.5
    assert saved["samples_format"] == "png"


def test_invalid_values_are_reported_and_the_valid_ones_still_apply(opts: Options, tmp_path: Path) -> None:
    settings_file = tmp_path / "config.json"

    result = apply_settings(opts, {"jpeg_quality": "very high", "CLIP_stop_at_last_layers": 2.5,
                                   "samples_save": "maybe", "no_such_setting": 1, "eta_ancestral": 0.7,
                                   "api_max_steps": None}, settings_file)

    assert result.changed == ["eta_ancestral"]
    assert [e.split(":")[0] for e in result.errors] == ["jpeg_quality", "CLIP_stop_at_last_layers", "samples_save",
                                                       "no_such_setting", "api_max_steps"]
    assert result.errors[-1] == "api_max_steps: a value is required."
    assert opts.api_max_steps == 150
    message = result.message()
    assert message.startswith("1 setting changed: eta_ancestral. Not applied: jpeg_quality:")
    assert "expects int" in message and "unknown setting" in message
    assert opts.jpeg_quality == 80 and opts.CLIP_stop_at_last_layers == 1 and opts.samples_save is True
    assert json.loads(settings_file.read_text(encoding="utf8"))["eta_ancestral"] == 0.7


def test_nothing_changed_writes_no_file(opts: Options, tmp_path: Path) -> None:
    settings_file = tmp_path / "config.json"
    unchanged = {key: getattr(opts, key) for key in opts.data_labels}

    result = apply_settings(opts, unchanged, settings_file)

    assert result.changed == [] and result.errors == []
    assert result.message() == "0 settings changed."
    assert not settings_file.exists()


def test_frozen_settings_are_not_applied(tmp_path: Path) -> None:
    opts = Options(options_templates, frozen_keys=["jpeg_quality"], frozen_sections=["saving-paths"])
    settings_file = tmp_path / "config.json"

    result = apply_settings(opts, {"jpeg_quality": 50, "outdir_txt2img_samples": "elsewhere", "eta_ddim": 0.25,
                                   "samples_format": "png"}, settings_file)

    assert result.changed == ["eta_ddim"]
    assert [e.split(":")[0] for e in result.errors] == ["jpeg_quality", "outdir_txt2img_samples"]
    assert all("read-only" in e for e in result.errors)
    assert opts.jpeg_quality == 80 and opts.outdir_txt2img_samples == "outputs/txt2img-images"
    saved = json.loads(settings_file.read_text(encoding="utf8"))
    assert saved["jpeg_quality"] == 80 and saved["eta_ddim"] == 0.25


def test_locked_keys_and_hide_ui_dir_config(opts: Options) -> None:
    assert locked_settings(opts, SimpleNamespace(hide_ui_dir_config=False)) == set()
    locked = locked_settings(opts, SimpleNamespace(hide_ui_dir_config=True))
    assert {"outdir_extras_samples", "samples_filename_pattern"} <= locked and "jpeg_quality" not in locked
    result = apply_settings(opts, {"outdir_extras_samples": "/tmp/x"}, None, locked=locked)
    assert result.changed == [] and opts.outdir_extras_samples == "outputs/extras-images"


def test_failing_onchange_keeps_the_old_value(tmp_path: Path) -> None:
    def refuse() -> None:
        raise RuntimeError("model not found")

    opts = Options({"sd_model_checkpoint": OptionInfo("a.safetensors", "Checkpoint", onchange=refuse)})
    result = apply_settings(opts, {"sd_model_checkpoint": "b.safetensors"}, tmp_path / "config.json")
    assert result.changed == []
    assert "model not found" in result.errors[0]
    assert opts.sd_model_checkpoint == "a.safetensors"


def test_only_fields_edited_on_the_page_count_as_changes(opts: Options) -> None:
    shown = {"jpeg_quality": 80, "samples_save": True, "eta_ddim": 0.0}
    opts.set("eta_ddim", 0.4)  # changed through the API after the page loaded
    edited = edited_values(opts, shown, {"jpeg_quality": 80.0, "samples_save": False, "eta_ddim": 0.0})
    assert edited == {"samples_save": False}
    result = apply_settings(opts, edited, None)
    assert result.changed == ["samples_save"] and opts.eta_ddim == 0.4
    assert edited_values(opts, shown, {"jpeg_quality": "lots"}) == {"jpeg_quality": "lots"}


def test_sections_keep_declaration_order_and_unsectioned_go_last() -> None:
    templates = {
        "loose": OptionInfo(1, "No section"),
        **options_section(("b", "Bee"), {"x": OptionInfo(True, "X")}),
        **options_section(("a", "Ay"), {"y": OptionInfo("s", "Y"), "z": OptionInfo(0.5, "Z")}),
    }
    sections = group_by_section(Options(templates))
    assert sections == [("b", "Bee", ["x"]), ("a", "Ay", ["y", "z"]), (*OTHER_SECTION, ["loose"])]


def test_component_follows_the_declaration_or_the_default_type() -> None:
    infos = {
        "flag": OptionInfo(True, "Flag"),
        "count": OptionInfo(3, "Count"),
        "ratio": OptionInfo(0.5, "Ratio", component_args={"minimum": 0.0, "maximum": 1.0}),
        "name": OptionInfo("x", "Name"),
        "mode": OptionInfo("a", "Mode", component_args={"choices": ["a", "b"]}),
        "radio": OptionInfo("a", "Radio", gr.Radio, lambda: {"choices": ["a", "b"]}),
        "names": OptionInfo(["e1"], "Names"),
    }
    with gr.Blocks():
        built = {key: build_setting_component(key, info, info.default, interactive=key != "name")
                 for key, info in infos.items()}
    assert type(built["flag"]) is gr.Checkbox
    assert type(built["count"]) is gr.Number and built["count"].precision == 0
    assert type(built["ratio"]) is gr.Slider and built["ratio"].maximum == 1.0
    assert type(built["name"]) is gr.Textbox and built["name"].interactive is False
    assert type(built["mode"]) is gr.Dropdown and [c[0] for c in built["mode"].choices] == ["a", "b"]
    assert type(built["radio"]) is gr.Radio
    assert type(built["names"]) is gr.Dropdown and built["names"].multiselect and built["names"].value == ["e1"]
    assert built["flag"].elem_id == "setting_flag" and built["count"].label == "Count"


def test_tab_builds_every_setting_and_freezes_frozen_ones(tmp_path: Path) -> None:
    opts = Options(options_templates, frozen_sections=["sd"])
    ctx = SimpleNamespace(opts=opts, args=SimpleNamespace(hide_ui_dir_config=False),
                          paths=SimpleNamespace(settings_file=tmp_path / "config.json"))
    with gr.Blocks() as demo, gr.Tab("Settings"):
        create_settings_tab(ctx)
    fields = {b.elem_id: b for b in demo.blocks.values() if (b.elem_id or "").startswith("setting_")}
    assert set(fields) == {f"setting_{key}" for key in options_templates if key not in QUICKSETTINGS}
    assert "setting_sd_model_checkpoint" not in fields  # the checkpoint bar above the tabs owns that id
    assert fields["setting_sd_vae"].interactive is False
    assert fields["setting_jpeg_quality"].interactive is True
