"""Tests for modules/options.py: typed settings, atomic save, recovery from a corrupt config.json."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from modules import options
from modules.options import OptionInfo, Options, SettingsError, options_section
from modules.shared_options import options_templates


def make() -> Options:
    return Options(options_section(("s", "Section"), {
        "steps": OptionInfo(20, "Steps"),
        "cfg": OptionInfo(7.0, "CFG"),
        "name": OptionInfo("png", "Format"),
        "flag": OptionInfo(True, "Flag"),
        "items": OptionInfo([], "Items"),
    }))


def test_defaults_and_attribute_access():
    opts = make()
    assert opts.steps == 20 and opts.name == "png"
    opts.steps = 30
    assert opts.steps == 30 and opts.data["steps"] == 30
    with pytest.raises(AttributeError):
        _ = opts.nope


def test_values_are_cast_to_the_declared_type():
    opts = make()
    opts.set("steps", "25")
    opts.set("cfg", 5)
    opts.set("flag", "false")
    assert opts.steps == 25 and isinstance(opts.cfg, float) and opts.flag is False
    with pytest.raises(SettingsError, match="expects int"):
        opts.set("steps", "many")
    with pytest.raises(SettingsError, match="unknown setting"):
        opts.set("bogus", 1)


def test_save_and_load_round_trip(tmp_path: Path):
    path = tmp_path / "config.json"
    opts = make()
    opts.set("steps", 42)
    opts.save(path)
    again = make()
    again.load(path)
    assert again.steps == 42
    assert json.loads(path.read_text())["steps"] == 42


def test_save_is_atomic_when_writing_fails(tmp_path: Path, monkeypatch):
    path = tmp_path / "config.json"
    opts = make()
    opts.save(path)
    before = path.read_text()
    opts.set("steps", 99)

    def broken_dump(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(options.json, "dump", broken_dump)
    with pytest.raises(OSError):
        opts.save(path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_corrupt_file_is_moved_aside_with_a_warning(tmp_path: Path, caplog):
    path = tmp_path / "config.json"
    path.write_text('{"steps": 12, ')
    opts = make()
    with caplog.at_level(logging.WARNING):
        opts.load(path)
    assert opts.steps == 20
    assert not path.exists()
    moved = list(tmp_path.glob("config.json.corrupt-*"))
    assert len(moved) == 1 and moved[0].read_text() == '{"steps": 12, '
    assert "could not be read" in caplog.text


def test_non_object_json_counts_as_corrupt(tmp_path: Path):
    path = tmp_path / "config.json"
    path.write_text("[1, 2]")
    opts = make()
    opts.load(path)
    assert not path.exists() and opts.steps == 20


def test_bad_saved_value_is_ignored_and_unknown_keys_kept(tmp_path: Path, caplog):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"steps": "lots", "cfg": 3, "extension_setting": "x"}))
    opts = make()
    with caplog.at_level(logging.WARNING):
        opts.load(path)
    assert opts.steps == 20 and opts.cfg == 3.0 and opts.extension_setting == "x"
    assert "steps" in caplog.text


def test_frozen_settings_refuse_changes():
    opts = Options(make().data_labels, frozen_keys=["steps"])
    with pytest.raises(SettingsError, match="frozen"):
        opts.set("steps", 3)
    opts.set("cfg", 3)
    frozen = Options(make().data_labels, frozen_sections=["s"])
    with pytest.raises(SettingsError):
        frozen.set("cfg", 1)


def test_restricted_settings_refuse_api_changes():
    opts = Options({"secret": OptionInfo(True, "x", restrict_api=True)})
    with pytest.raises(SettingsError, match="API"):
        opts.set("secret", False, is_api=True)
    assert opts.set("secret", False) is True


def test_onchange_runs_and_failed_onchange_restores_value():
    calls = []
    opts = make()
    opts.onchange("steps", lambda: calls.append(opts.steps), call=False)
    opts.set("steps", 5)
    assert calls == [5]

    def fail():
        raise RuntimeError("no")

    opts.onchange("cfg", fail, call=False)
    with pytest.raises(RuntimeError):
        opts.set("cfg", 1.0)
    assert opts.cfg == 7.0


def test_builtin_settings_use_a1111_defaults():
    opts = Options(options_templates)
    assert opts.samples_format == "png" and opts.CLIP_stop_at_last_layers == 1 and opts.eta_ancestral == 1.0
    assert opts.eta_noise_seed_delta == 0 and opts.emphasis == "Original" and opts.comma_padding_backtrack == 20
    assert opts.disabled_extensions == [] and opts.disable_all_extensions == "none"
    assert all(info.section for info in options_templates.values())
