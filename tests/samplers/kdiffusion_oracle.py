"""Import k-diffusion's ``sampling`` and ``external`` modules as test oracles, without its package ``__init__``.

k-diffusion 0.1.1.post1 is installed with --no-deps (see requirements-test-nodeps.txt); its ``__init__`` pulls in
training code whose dependencies (wandb, clip, ...) are absent. A stub package module pointing at the installed
directory lets ``k_diffusion.sampling`` and ``k_diffusion.external`` import on their own. ``k_diffusion.utils`` is
used as installed when it imports, else replaced by a stub with the one helper the samplers need.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import torch


def _package_dir() -> Path:
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("k-diffusion is not installed (requirements-test-nodeps.txt)")
    return Path(next(iter(spec.submodule_search_locations)))


def _install_stub_package() -> None:
    existing = sys.modules.get("k_diffusion")
    if existing is not None and hasattr(existing, "__path__"):
        return
    package = types.ModuleType("k_diffusion")
    package.__path__ = [str(_package_dir())]
    sys.modules["k_diffusion"] = package


def _ensure_utils() -> None:
    if "k_diffusion.utils" in sys.modules:
        return
    try:
        importlib.import_module("k_diffusion.utils")
    except ImportError:
        utils = types.ModuleType("k_diffusion.utils")

        def append_dims(x: torch.Tensor, target_dims: int) -> torch.Tensor:
            return x[(...,) + (None,) * (target_dims - x.ndim)]

        utils.append_dims = append_dims
        sys.modules["k_diffusion.utils"] = utils
        sys.modules["k_diffusion"].utils = utils


def load() -> tuple[types.ModuleType, types.ModuleType]:
    """(k_diffusion.sampling, k_diffusion.external)."""
    _install_stub_package()
    _ensure_utils()
    sampling = importlib.import_module("k_diffusion.sampling")
    external = importlib.import_module("k_diffusion.external")
    return sampling, external
