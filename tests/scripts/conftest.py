"""Shared set-up for the built-in script tests: the repository's ``scripts/`` loaded into fresh runners, module
state (callbacks, loaded scripts, runners, the shared model cache) restored after every test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from modules import script_callbacks, scripts, shared
from modules.processing import StableDiffusionProcessingTxt2Img

SCRIPTS_DIR = scripts.BUILTIN_SCRIPTS_DIR


@pytest.fixture
def builtin_scripts(monkeypatch: pytest.MonkeyPatch) -> Iterator[scripts.ScriptRunner]:
    """The repository's scripts loaded (no extensions); yields the txt2img runner."""
    script_callbacks.clear_callbacks()
    for name in ("scripts_data", "load_errors", "scripts_txt2img", "scripts_img2img", "current_basedir"):
        monkeypatch.setattr(scripts, name, getattr(scripts, name))
    monkeypatch.setattr(scripts, "script_extension", dict(scripts.script_extension))
    monkeypatch.setattr(shared, "model_cache", None)
    monkeypatch.setattr(shared, "paths", None)
    scripts.load_scripts([], builtin_scripts_dir=SCRIPTS_DIR)
    assert not scripts.load_errors, scripts.load_errors
    yield scripts.scripts_txt2img
    script_callbacks.clear_callbacks()


def script_module(title: str) -> Any:
    """The executed module of the loaded script class with that title."""
    for data in scripts.scripts_data:
        if data.script_class().title() == title:
            return data.module
    raise KeyError(title)


def tiny_job(env: Any, model: Any, **fields: Any) -> StableDiffusionProcessingTxt2Img:
    """A 32x32, 2-step Euler job on the tiny model, wired to the test's settings, state and folder."""
    values = {"prompt": "a red cube", "negative_prompt": "blurry", "seed": 5, "steps": 2, "width": 32, "height": 32,
              "cfg_scale": 5.0, "sampler_name": "Euler", "do_not_save_samples": True, "do_not_save_grid": True}
    values.update(fields)
    return env.apply(StableDiffusionProcessingTxt2Img(sd_model=model, **values))


def with_script(p: Any, runner: scripts.ScriptRunner, title: str, args: list) -> Any:
    """Attach the runner and the request's script arguments the way the API does; returns ``p``."""
    _, p.script_args = scripts.build_script_args(runner, script_name=title, script_args=args)
    p.scripts = runner
    p.callbacks = script_callbacks
    return p
