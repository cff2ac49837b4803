"""Switching checkpoints from inside a selectable script (X/Y/Z plot's "Checkpoint name" axis, the ``--sd_model``
option of "Prompts from file or textbox").

The job that runs a script has already been given ``p.sd_model`` by the API or UI getter. A script that needs
another checkpoint for one of its cells loads it through the app's model cache (``modules.shared.model_cache``, the
same :class:`~modules.sd_models.ModelCache` the getter uses) and prepares it the way the getter does (VAE setting,
embeddings), then sets ``p.sd_model`` on its copy of ``p``. ``p.override_settings["sd_model_checkpoint"]`` is set
too, for the record; processing itself never loads models.
"""

from __future__ import annotations

import os
from typing import Any

from modules.errors import InvalidRequest
from modules.sd_models import CheckpointInfo, get_closest_checkpoint_match, list_models

NO_CACHE_HINT = "Switching checkpoints needs the running app's model cache; start Atelier normally (webui)."


def _shared(name: str) -> Any:
    from modules import shared

    return getattr(shared, name, None)


def model_cache() -> Any:
    return _shared("model_cache")


def available_checkpoints() -> dict[str, CheckpointInfo]:
    """The checkpoint files the app would list now (the model cache's folders and ``--ckpt``)."""
    cache = model_cache()
    paths = getattr(cache, "paths", None) or _shared("paths")
    args = getattr(cache, "args", None) or _shared("cmd_opts")
    if paths is None:
        return {}
    return list_models(paths, getattr(args, "ckpt", None), no_hashing=bool(getattr(args, "no_hashing", False)))


def checkpoint_titles() -> list[str]:
    try:
        return list(available_checkpoints())
    except OSError:
        return []


def resolve_title(name: str) -> str:
    """The title of the checkpoint ``name`` matches (A1111's closest match); raises when none or no model cache."""
    if model_cache() is None:
        raise InvalidRequest(f"Cannot switch to checkpoint {name!r}: no model cache is available.", NO_CACHE_HINT)
    return get_closest_checkpoint_match(str(name), available_checkpoints()).title


def format_checkpoint(option: Any, value: Any) -> str:
    """Legend text: the file name without folders, extension or hash."""
    name = os.path.basename(str(value).split(" [")[0])
    return f"{option.label}: {os.path.splitext(name)[0]}"


def load_checkpoint_model(p: Any, title: str) -> Any:
    """The model for ``title`` from the app's cache, with the job's VAE and embeddings settings applied."""
    from modules.model_selection import prepare_model

    cache = model_cache()
    if cache is None:
        raise InvalidRequest(f"Cannot switch to checkpoint {title!r}: no model cache is available.", NO_CACHE_HINT)
    info = get_closest_checkpoint_match(title, available_checkpoints())
    model = cache.get(info)
    opts = p.opts if getattr(p, "opts", None) is not None else _shared("opts")
    return prepare_model(model, opts, getattr(cache, "paths", None), getattr(cache, "args", None))


def apply_checkpoint(p: Any, title: str) -> None:
    """Make ``p`` (a script's copy of the job) generate with checkpoint ``title``."""
    p.override_settings["sd_model_checkpoint"] = title
    p.sd_model = load_checkpoint_model(p, title)
