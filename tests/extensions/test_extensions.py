"""``modules.extensions``: discovery, enable/disable modes, ``Requires`` and ordering, metadata.ini, UI assets,
preload hooks and flag parsing with them."""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import pytest

from modules import extensions, extensions_install
from modules.extensions import ExtensionMetadata, dependency_order, parse_list
from tests.extensions.conftest import ExtEnv


def names(exts: list[extensions.Extension], only_active: bool = True) -> list[str]:
    return [e.name for e in exts if e.active or not only_active]


def test_discovery_builtins_first_with_lower_case_names(ext_env: ExtEnv) -> None:
    ext_env.add("test_ext", target="Test_Ext")
    ext_env.add("broken_ext")
    ext_env.make("zeta_builtin", builtin=True)
    ext_env.make(".hidden")
    (ext_env.paths.extensions_dir / "not-a-folder.txt").write_text("x")
    exts = ext_env.list()
    assert names(exts) == ["zeta_builtin", "broken_ext", "test_ext"]
    by_name = {e.name: e for e in exts}
    assert by_name["zeta_builtin"].is_builtin and not by_name["test_ext"].is_builtin
    assert by_name["test_ext"].dirname == "Test_Ext" and Path(by_name["test_ext"].path).name == "Test_Ext"
    assert by_name["test_ext"].metadata.display_name == "Test Extension"
    assert all(e.enabled and e.active and e.disabled_reason == "" for e in exts)


def test_same_name_twice_keeps_the_builtin(ext_env: ExtEnv, caplog: pytest.LogCaptureFixture) -> None:
    ext_env.make("Dup", builtin=True)
    ext_env.make("dup")
    exts = ext_env.list()
    assert [(e.name, e.is_builtin) for e in exts] == [("dup", True)]
    assert "same name" in caplog.text


def test_disabled_extensions_setting_is_case_insensitive(ext_env: ExtEnv) -> None:
    ext_env.add("test_ext")
    ext_env.add("broken_ext")
    ext_env.opts.set("disabled_extensions", ["Broken_Ext"])
    exts = ext_env.list()
    broken = extensions.find_extension(exts, "broken_ext")
    assert broken is not None and not broken.enabled and not broken.active
    assert broken.disabled_reason == "disabled in settings"
    assert names(extensions.active(exts)) == ["test_ext"]


@pytest.mark.parametrize(("setting", "flags", "expected", "cause"), [
    ("none", [], ["core", "broken_ext", "test_ext"], ""),
    ("extra", [], ["core"], "the disable_all_extensions setting"),
    ("none", ["--disable-extra-extensions"], ["core"], "--disable-extra-extensions"),
    ("all", [], [], "the disable_all_extensions setting"),
    ("none", ["--disable-all-extensions"], [], "--disable-all-extensions"),
    ("extra", ["--disable-all-extensions"], [], "--disable-all-extensions"),
])
def test_disable_modes(ext_env: ExtEnv, setting: str, flags: list[str], expected: list[str], cause: str) -> None:
    ext_env.make("core", builtin=True)
    ext_env.add("test_ext")
    ext_env.add("broken_ext")
    ext_env.opts.set("disable_all_extensions", setting)
    exts = ext_env.list(*flags)
    assert names(exts) == expected
    assert names(exts, only_active=False) == ["core", "broken_ext", "test_ext"]
    for ext in exts:
        assert ext.enabled, "the user's per-extension choice is kept; only `active` follows the mode"
        if not ext.active:
            assert cause in ext.disabled_reason


def test_requires_missing_disables_with_reason_and_orders_dependents(ext_env: ExtEnv,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    ext_env.make("aaa_needs_test", "[Extension]\nRequires = nothing_here|test_ext\n")
    ext_env.make("needs_missing", "[Extension]\nRequires = missing_ext, test_ext\n")
    ext_env.make("needs_needs_missing", "[Extension]\nRequires = needs_missing\n")
    ext_env.make("aab_before_all", "[Extension]\nBefore = aaa_needs_test\n")
    ext_env.add("test_ext")
    with caplog.at_level(logging.WARNING):
        exts = ext_env.list()
    assert names(exts) == ["aab_before_all", "test_ext", "aaa_needs_test"]
    reasons = {e.name: e.disabled_reason for e in exts if not e.active}
    assert reasons == {
        "needs_missing": "requires missing_ext, which is not installed or not enabled",
        "needs_needs_missing": "requires needs_missing, which is not installed or not enabled",
    }
    assert "needs_missing is not loaded" in caplog.text
    ext_env.opts.set("disabled_extensions", ["test_ext"])
    reasons = {e.name: e.disabled_reason for e in ext_env.list() if not e.active}
    assert reasons["aaa_needs_test"] == "requires nothing_here or test_ext, which is not installed or not enabled"


def test_shared_folder_counts_git_clones_as_extra(tmp_path: Path, ext_env: ExtEnv) -> None:
    """Without --data-dir the built-in and user folders are the same; a folder with its own .git is the user's."""
    shared_dir = ext_env.builtin_dir
    ext_env.make("shipped", builtin=True)
    (ext_env.make("cloned", builtin=True) / ".git").mkdir()

    class SharedPaths:
        extensions_dir = shared_dir

    exts = extensions.list_extensions(SharedPaths(), ext_env.opts, ext_env.args("--disable-extra-extensions"),
                                      builtin_dir=shared_dir)
    assert [(e.name, e.is_builtin, e.active) for e in exts] == [("cloned", False, False), ("shipped", True, True)]


def test_metadata_lists_and_sections(tmp_path: Path) -> None:
    (tmp_path / "metadata.ini").write_text(
        "[Extension]\nName = Pretty\nRequires = A, b|C  d\n\n[scripts/x.py]\nAfter = other/y.py\n"
        "[scripts]\nBefore = z\n[callbacks/e/x.py/cfg_denoiser]\nBefore = f\n")
    meta = ExtensionMetadata(tmp_path, "E")
    assert meta.canonical_name == "e" and meta.display_name == "Pretty"
    assert meta.requires() == ["a", "b|c", "d"]
    assert meta.script_order("x.py", "after") == ["other/y.py"]
    assert meta.script_order("x.py", "before") == ["z"]
    assert meta.callback_order("e/x.py/cfg_denoiser", "Before") == ["f"]
    assert parse_list(None) == [] and parse_list(" a,,b ") == ["a", "b"]
    (tmp_path / "metadata.ini").write_text("not an ini file [")
    assert ExtensionMetadata(tmp_path, "e").requires() == []


def test_dependency_order_is_stable_and_survives_cycles(caplog: pytest.LogCaptureFixture) -> None:
    after = {"a": ["c"], "b": [], "c": [], "d": ["e"], "e": ["d"]}
    order = dependency_order(list("abcde"), lambda x: [x], lambda x: after[x], lambda x: [])
    assert order == ["b", "c", "a", "d", "e"]
    assert "cycle" in caplog.text


def test_ui_assets_of_active_extensions(ext_env: ExtEnv) -> None:
    ext_env.add("test_ext")
    ext_env.make("plain", files={"javascript/a.js": "", "javascript/notes.txt": "", "style.css": ""})
    ext_env.make("off", files={"javascript/off.js": "", "style.css": "", "localizations/test-lang.json": "{}"})
    ext_env.opts.set("disabled_extensions", ["off"])
    exts = ext_env.list()
    rel = [str(p.relative_to(ext_env.paths.extensions_dir)) for p in extensions.javascript_files(exts)]
    assert rel == ["plain/javascript/a.js", "test_ext/javascript/test.js", "test_ext/javascript/module.mjs"]
    css = [p.parent.name for p in extensions.stylesheet_files(exts)]
    assert css == ["plain", "test_ext"]
    assert {k: [p.parent.parent.name for p in v] for k, v in extensions.localization_files(exts).items()} == {
        "test-lang": ["test_ext"]}


def test_preload_hooks_and_flag_parsing(ext_env: ExtEnv, caplog: pytest.LogCaptureFixture) -> None:
    ext_env.add("test_ext")
    ext_env.make("bad_preload", files={"preload.py": "raise RuntimeError('preload boom')\n"})
    ext_env.make("bad_hook", files={"preload.py": "def preload(parser):\n    raise ValueError('hook boom')\n"})
    hooks = extensions.preload_hooks(ext_env.paths, ext_env.opts, ext_env.args(), exts=ext_env.list())
    assert len(hooks) == 2
    assert "Extension bad_preload: preload.py failed" in caplog.text

    argv = ["--data-dir", str(ext_env.data_dir), "--test-ext-flag", "--test-ext-value", "v1"]
    args = extensions.parse_args_with_preload(argv, environ={})
    assert args.test_ext_flag is True and args.test_ext_value == "v1" and args.data_dir == str(ext_env.data_dir)
    assert "Extension bad_hook: preload(parser) failed" in caplog.text
    from_env = extensions.parse_args_with_preload([], environ={
        "COMMANDLINE_ARGS": f"--data-dir {ext_env.data_dir} --test-ext-flag"})
    assert from_env.test_ext_flag is True


def test_help_lists_extension_flags(ext_env: ExtEnv, capsys: pytest.CaptureFixture[str]) -> None:
    ext_env.add("test_ext")
    with pytest.raises(SystemExit) as exit_info:
        extensions.parse_args_with_preload(["--data-dir", str(ext_env.data_dir), "--help"], environ={})
    assert exit_info.value.code == 0
    assert "flag added by the test extension" in capsys.readouterr().out


@pytest.mark.parametrize("how", ["flag", "setting"])
def test_preload_flags_vanish_with_their_extension(ext_env: ExtEnv, how: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    ext_env.add("test_ext")
    argv = ["--data-dir", str(ext_env.data_dir), "--test-ext-flag"]
    if how == "flag":
        argv.append("--disable-extra-extensions")
    else:
        ext_env.paths.settings_file.write_text(json.dumps({"disabled_extensions": ["test_ext"]}))
    with pytest.raises(SystemExit) as exit_info:
        extensions.parse_args_with_preload(argv, environ={})
    assert exit_info.value.code == 2
    assert "--test-ext-flag" in capsys.readouterr().err


def test_installers_follow_list_extensions(ext_env: ExtEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """``extensions_install`` runs install.py only for active extensions (the start-up path)."""
    ext_env.add("test_ext")
    ext_env.make("needs_missing", "[Extension]\nRequires = missing\n", files={"install.py": "raise SystemExit(3)\n"})
    monkeypatch.setattr(extensions, "list_extensions",
                        functools.partial(extensions.list_extensions, builtin_dir=ext_env.builtin_dir))
    assert extensions_install.enabled_extension_dirs(ext_env.paths, ext_env.opts, ext_env.args()) == [
        ext_env.paths.extensions_dir / "test_ext"]
    extensions_install.run_installers(ext_env.paths, ext_env.opts, ext_env.args())
    marker = ext_env.paths.extensions_dir / "test_ext" / "installed.marker"
    assert marker.read_text() == "pytest installed: True\n"
    assert extensions_install.run_install_script(ext_env.paths.extensions_dir / "needs_missing") is False
