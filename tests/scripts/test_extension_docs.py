"""``docs/extensions.md`` cannot rot: its example extension is the fixture ``tint_example`` (checked file by file),
that fixture loads and runs through a real generation, and every hook and callback the core offers is documented."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from PIL import Image

from modules import cmd_args, extensions, infotext, script_callbacks, scripts
from modules.options import Options
from modules.paths import ROOT, paths_from_args
from modules.processing import process_images
from modules.shared_options import options_templates
from tests.scripts.conftest import tiny_job

if TYPE_CHECKING:
    from tests.pipeline_fixtures import PipelineEnv

pytest_plugins = ["tests.pipeline_fixtures"]

DOC = ROOT / "docs" / "extensions.md"
FIXTURES = ROOT / "tests" / "fixtures" / "extensions"
EXAMPLE = "tint_example"


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.S | re.M)


def named_blocks() -> dict[str, str]:
    """Code blocks of the doc whose first line is ``# <fixture extension>/<path>``."""
    found = {}
    for block in code_blocks(DOC.read_text(encoding="utf8")):
        first = block.split("\n", 1)[0]
        if first.startswith(f"# {EXAMPLE}/"):
            found[first[2:]] = block
    return found


def test_doc_example_is_the_fixture_extension() -> None:
    blocks = named_blocks()
    files = {f"{EXAMPLE}/{p.relative_to(FIXTURES / EXAMPLE).as_posix()}": p
             for p in (FIXTURES / EXAMPLE).rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert set(blocks) == set(files), "every fixture file is shown in the doc, and nothing else under its name"
    for name, block in blocks.items():
        assert block == files[name].read_text(encoding="utf8"), f"{name} differs from the doc"


def test_doc_lists_every_hook_and_callback() -> None:
    text = DOC.read_text(encoding="utf8")
    registrations = [n for n in dir(script_callbacks) if n.startswith("on_") and callable(getattr(script_callbacks, n))]
    assert len(registrations) >= 20
    assert [n for n in registrations if f"`{n}`" not in text] == []
    hooks = [n for n, v in vars(scripts.Script).items() if callable(v) and not n.startswith("_")
             and n not in ("describe", "elem_id", "title", "show", "ui", "run")]
    assert [h for h in hooks if f"`{h}(" not in text] == []


@pytest.fixture
def tint_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[scripts.ScriptRunner]:
    """The fixture extension copied into a fresh data folder and loaded the way the app loads extensions."""
    script_callbacks.clear_callbacks()
    for name in ("scripts_data", "load_errors", "scripts_txt2img", "scripts_img2img", "current_basedir"):
        monkeypatch.setattr(scripts, name, getattr(scripts, name))
    monkeypatch.setattr(scripts, "script_extension", dict(scripts.script_extension))
    args = cmd_args.parse_args(["--data-dir", str(tmp_path / "data")], environ={})
    paths = paths_from_args(args)
    shutil.copytree(FIXTURES / EXAMPLE, paths.extensions_dir / EXAMPLE,
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "builtin").mkdir()
    exts = extensions.list_extensions(paths, Options(options_templates), args, builtin_dir=tmp_path / "builtin")
    scripts.load_scripts(exts, builtin_scripts_dir=tmp_path / "no-scripts")
    assert not scripts.load_errors
    yield scripts.scripts_txt2img
    script_callbacks.clear_callbacks()


def test_tint_example_runs(pipeline_env: PipelineEnv, tiny_sd1: Any, tint_loaded: scripts.ScriptRunner) -> None:
    runner = tint_loaded
    assert [s.title() for s in runner.alwayson_scripts] == ["Tint"]
    plain = process_images(tiny_job(pipeline_env, tiny_sd1))

    p = tiny_job(pipeline_env, tiny_sd1)
    _, p.script_args = scripts.build_script_args(runner, alwayson_scripts={"tint": {"args": [0.5, "cool"]}})
    p.scripts, p.callbacks = runner, script_callbacks
    tinted = process_images(p)
    expected = Image.blend(plain.images[0], Image.new("RGB", (32, 32), (60, 140, 255)), 0.5)
    assert np.array_equal(np.asarray(tinted.images[0]), np.asarray(expected))
    params = infotext.parse_generation_parameters(tinted.infotexts[0])
    assert (params["Tint"], params["Tint colour"]) == ("0.5", "cool")

    untouched = tiny_job(pipeline_env, tiny_sd1)
    _, untouched.script_args = scripts.build_script_args(runner)
    untouched.scripts = runner
    assert np.array_equal(np.asarray(process_images(untouched).images[0]), np.asarray(plain.images[0])), \
        "the default (0) leaves pictures alone"
    assert infotext.parse_generation_parameters(plain.infotexts[0])["Tint"] == "0", "the paste callback's default"
