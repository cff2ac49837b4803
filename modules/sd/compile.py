"""`--compile`: torch.compile the UNet, with Inductor's on-disk cache so a second start does not recompile.

Inductor emits C++ on CPUs and Triton kernels on GPUs. The first compilation takes minutes on a small CPU; the FX
graph cache (kept in `cache_dir`, by default `<data-dir>/cache/torch-compile`) makes later processes reuse the
compiled kernels, so the cost is paid once per model architecture, dtype and input shape.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn


def enable_compile_cache(cache_dir: Path) -> None:
    """Point Inductor's caches at `cache_dir` and turn the FX graph cache on (must run before compiling).

    Inductor reads the folder from TORCHINDUCTOR_CACHE_DIR at each use and writes its default there on first use, so
    the variable is set outright: an inherited default would otherwise win.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir)
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True


def compile_unet(unet: nn.Module, cache_dir: Path | None = None, *, mode: str | None = None) -> nn.Module:
    """A compiled view of `unet` sharing its weights; the original module stays usable for hooks that need it."""
    if cache_dir is not None:
        enable_compile_cache(cache_dir)
    return torch.compile(unet, mode=mode, dynamic=False)
