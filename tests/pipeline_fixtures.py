"""Shared fixtures for pipeline tests: tiny random-weight SD1, SD1-inpainting and SDXL checkpoints, loaded once.

A test module enables them with::

    pytest_plugins = ["tests.pipeline_fixtures"]

The tiny VAE halves the resolution once (a 32x32 picture is a 16x16 latent), so images stay cheap on 2 CPU cores.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from modules.options import Options
from modules.sd.loader import StableDiffusionModel, load_model
from modules.shared_options import options_templates
from modules.shared_state import State
from tests.sd.factory import write_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-checkpoints")


def _load(kind: str, folder: Path) -> StableDiffusionModel:
    return load_model(write_tiny_checkpoint(kind, folder, name=f"tiny-{kind}"))


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models run faster on one thread than on two contended ones; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_sd1(tiny_checkpoint_dir: Path) -> StableDiffusionModel:
    return _load("sd1", tiny_checkpoint_dir)


@pytest.fixture(scope="session")
def tiny_sd1_inpaint(tiny_checkpoint_dir: Path) -> StableDiffusionModel:
    return _load("sd1_inpaint", tiny_checkpoint_dir)


@pytest.fixture(scope="session")
def tiny_sdxl(tiny_checkpoint_dir: Path) -> StableDiffusionModel:
    return _load("sdxl", tiny_checkpoint_dir)


@dataclass
class PipelineEnv:
    """Settings, progress state and a data folder for one test; ``apply(p)`` wires them into a processing object."""

    opts: Options
    state: State
    data_dir: Path
    cache_file: Path

    def apply(self, p: Any) -> Any:
        p.opts, p.state, p.paths = self.opts, self.state, self
        return p


@pytest.fixture
def pipeline_env(tmp_path: Path, one_thread: None) -> Iterator[PipelineEnv]:
    """Fresh default settings (live previews every step, no grid saving) writing under a temporary data folder."""
    opts = Options(options_templates)
    opts.set("show_progress_every_n_steps", 1)
    yield PipelineEnv(opts, State(), tmp_path, tmp_path / "cache.json")
