"""Training checkpoints: atomic writes, safe reads, and a work folder that keeps itself out of git.

A checkpoint is a plain dict of tensors, numbers, strings and nested dicts/lists (model and optimizer state, step,
elapsed seconds), so ``torch.load(weights_only=True)`` can read it back without trusting pickled code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def prepare_work_dir(path: Path) -> Path:
    """Create the folder with a ``.gitignore`` of ``*``: checkpoints and caches are never committed by accident."""
    path.mkdir(parents=True, exist_ok=True)
    ignore = path / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# training checkpoints and caches (written by modules.training)\n*\n", encoding="utf8")
    return path


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` through a temporary file, so an interrupted save never leaves a torn file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The state saved at ``path``, or None when there is none."""
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)
