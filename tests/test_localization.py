"""``modules/localization.py`` and its wiring: listing and merging ``localizations/*.json`` from the repository, the
data folder and active extensions, skipping bad files with a message, the ``localization`` setting's choices and
the ``window.localization`` script in the page head."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest

from modules import extensions, localization, shared, ui_assets
from modules.options import Options
from modules.shared_options import options_templates
from modules.ui_settings import build_setting_component


def write(folder: Path, name: str, data: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / f"{name}.json"
    file.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf8")
    return file


def extension(tmp_path: Path, name: str, enabled: bool = True) -> extensions.Extension:
    folder = tmp_path / "extensions" / name
    folder.mkdir(parents=True, exist_ok=True)
    return extensions.Extension(name, folder, enabled=enabled)


def test_list_names_files_by_stem_and_later_folders_win(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    write(first, "de_DE", {})
    write(first, "fr_FR", {})
    later = write(second, "de_DE", {})
    (second / "notes.txt").write_text("not a localization")
    found = localization.list_localizations([first, second, tmp_path / "missing"])
    assert found == {"de_DE": later, "fr_FR": first / "fr_FR.json"}


def test_load_merges_every_file_of_the_name_in_folder_order(tmp_path: Path) -> None:
    write(tmp_path / "repo", "de", {"Generate": "Erzeugen", "Seed": "Saat"})
    write(tmp_path / "ext", "de", {"Seed": "Startwert", "Width": "Breite", "count": 3})
    write(tmp_path / "ext", "fr", {"Generate": "Générer"})
    merged = localization.load_localization("de", [tmp_path / "repo", tmp_path / "ext"])
    assert merged == {"Generate": "Erzeugen", "Seed": "Startwert", "Width": "Breite"}  # non-strings are dropped
    assert localization.load_localization("None", [tmp_path / "repo"]) == {}
    assert localization.load_localization("xx", [tmp_path / "repo"]) == {}


@pytest.mark.parametrize("content", ["{not json", "[\"a list\"]"])
def test_bad_files_are_skipped_with_a_message_naming_them(tmp_path: Path, content: str,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    bad = write(tmp_path / "ext", "de", content)
    write(tmp_path / "repo", "de", {"Generate": "Erzeugen"})
    with caplog.at_level(logging.ERROR, logger="modules.localization"):
        merged = localization.load_localization("de", [tmp_path / "repo", tmp_path / "ext"])
    assert merged == {"Generate": "Erzeugen"}
    assert str(bad) in caplog.text and "skipped" in caplog.text


def test_dirs_are_repository_data_folder_then_active_extensions(tmp_path: Path) -> None:
    on, off = extension(tmp_path, "on"), extension(tmp_path, "off", enabled=False)
    dirs = localization.localization_dirs(SimpleNamespace(data_dir=tmp_path / "data"), [on, off])
    assert dirs == [localization.ROOT / "localizations", tmp_path / "data" / "localizations",
                    Path(on.path) / "localizations"]


def test_selected_localization_follows_the_setting(tmp_path: Path) -> None:
    ext = extension(tmp_path, "lang")
    write(Path(ext.path) / "localizations", "de", {"Generate": "Erzeugen"})
    opts, paths = Options(options_templates), SimpleNamespace(data_dir=tmp_path / "data")
    assert opts.localization == "None"
    assert localization.selected_localization(opts, paths, [ext]) == {}
    opts.set("localization", "de")
    assert localization.selected_localization(opts, paths, [ext]) == {"Generate": "Erzeugen"}
    ext.active = False
    assert localization.selected_localization(opts, paths, [ext]) == {}


def test_setting_offers_none_and_the_available_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ext = extension(tmp_path, "lang")
    write(Path(ext.path) / "localizations", "de_DE", {"Generate": "Erzeugen"})
    write(tmp_path / "data" / "localizations", "ja_JP", {"Generate": "生成"})
    monkeypatch.setattr(shared, "paths", SimpleNamespace(data_dir=tmp_path / "data"))
    monkeypatch.setattr(extensions, "extensions", [ext])
    info = options_templates["localization"]
    assert info.needs_reload_ui_flag and info.section[0] == "ui"
    choices = localization.setting_choices()["choices"]
    assert choices[0] == "None" and {"de_DE", "ja_JP"} <= set(choices)
    with gr.Blocks():
        field = build_setting_component("localization", info, "de_DE", interactive=True)
    assert isinstance(field, gr.Dropdown)
    assert {"de_DE", "ja_JP", "None"} <= {c[0] if isinstance(c, tuple) else c for c in field.choices}


def test_page_head_embeds_the_translations_before_the_scripts(tmp_path: Path) -> None:
    args = SimpleNamespace(theme=None)
    head = ui_assets.page_head(args, [], "b", translations={"Generate": "</script>Erzeugen"})
    embedded = head.index("window.localization = ")
    assert embedded < head.index("data-source='javascript/localization.js'")
    assert '"Generate": "<\\/script>Erzeugen"' in head  # cannot close the script tag early
    assert "window.localization = " not in ui_assets.page_head(args, [], "b", translations={})
