"""Shared set-up for the extension-system tests: fixture extensions copied into a temporary data folder, and
module state (callbacks, loaded scripts, runners) restored after every test."""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from modules import cmd_args, extensions, script_callbacks, scripts
from modules.options import Options
from modules.paths import Paths, paths_from_args
from modules.shared_options import options_templates

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "extensions"


@pytest.fixture(autouse=True)
def clean_extension_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test leaves callbacks, loaded scripts or runners behind in module globals."""
    script_callbacks.clear_callbacks()
    for name in ("scripts_data", "load_errors", "scripts_txt2img", "scripts_img2img", "current_basedir"):
        monkeypatch.setattr(scripts, name, getattr(scripts, name))
    monkeypatch.setattr(scripts, "script_extension", dict(scripts.script_extension))
    monkeypatch.setattr(extensions, "extensions", list(extensions.extensions))
    yield
    script_callbacks.clear_callbacks()


@dataclass
class ExtEnv:
    """A data folder with fixture extensions in ``<data>/extensions`` and an empty built-in folder."""

    data_dir: Path
    builtin_dir: Path
    paths: Paths
    opts: Options

    def args(self, *flags: str) -> argparse.Namespace:
        return cmd_args.parse_args(["--data-dir", str(self.data_dir), *flags], environ={})

    def add(self, name: str, target: str | None = None, builtin: bool = False) -> Path:
        """Copy fixture extension ``name`` (as ``target``) into the extensions or built-in folder."""
        dest = (self.builtin_dir if builtin else self.paths.extensions_dir) / (target or name)
        shutil.copytree(FIXTURES / name, dest, ignore=shutil.ignore_patterns("__pycache__", "*.marker"))
        return dest

    def make(self, name: str, metadata: str = "", builtin: bool = False, files: dict[str, str] | None = None) -> Path:
        """Create a small extension folder with an optional metadata.ini and files."""
        dest = (self.builtin_dir if builtin else self.paths.extensions_dir) / name
        dest.mkdir(parents=True)
        if metadata:
            (dest / "metadata.ini").write_text(metadata)
        for rel, text in (files or {}).items():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_text(text)
        return dest

    def list(self, *flags: str) -> list[extensions.Extension]:
        return extensions.list_extensions(self.paths, self.opts, self.args(*flags), builtin_dir=self.builtin_dir)


@pytest.fixture
def ext_env(tmp_path: Path) -> ExtEnv:
    data_dir = tmp_path / "data"
    builtin_dir = tmp_path / "builtin"
    builtin_dir.mkdir()
    paths = paths_from_args(cmd_args.parse_args(["--data-dir", str(data_dir)], environ={}))
    paths.extensions_dir.mkdir(parents=True)
    return ExtEnv(data_dir, builtin_dir, paths, Options(options_templates))


@pytest.fixture
def loaded(ext_env: ExtEnv) -> list[extensions.Extension]:
    """test_ext and broken_ext loaded (no repository scripts), runners initialised."""
    ext_env.add("test_ext")
    ext_env.add("broken_ext")
    exts = ext_env.list()
    scripts.load_scripts(exts, builtin_scripts_dir=ext_env.builtin_dir / "no-scripts")
    return exts


def module_of(title: str) -> object:
    """The executed module of the script class with that title (A1111's ``ScriptClassData.module``)."""
    for data in scripts.scripts_data:
        if data.script_class().title() == title:
            return data.module
    raise KeyError(title)
