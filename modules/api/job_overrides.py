"""Per-job ``override_settings`` for the model itself: ``sd_model_checkpoint`` and ``sd_vae``.

Processing applies every other override; these two decide which weights the job's model has, so they are set before
the model getter runs (inside the job, on the worker) and put back afterwards when
``override_settings_restore_afterwards`` is on. The next job's getter then loads what the settings say again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from modules import sd_vae
from modules.errors import InvalidRequest
from modules.options import Options
from modules.sd_models import CheckpointInfo, get_closest_checkpoint_match

log = logging.getLogger(__name__)

MODEL_KEYS = ("sd_model_checkpoint", "sd_vae")
_MISSING = object()


def check_vae_name(name: Any, paths: Any) -> str:
    """``name`` if it is "Automatic", "None" or a VAE file in the VAE folders, else a 422 listing the choices."""
    files = sd_vae.list_vae_files(getattr(paths, "vae_dirs", ()))
    if name in (sd_vae.AUTOMATIC, sd_vae.NONE) or name in files:
        return str(name)
    choices = ", ".join([sd_vae.AUTOMATIC, sd_vae.NONE, *files])
    raise InvalidRequest(f"VAE {name!r} not found. Valid values: {choices}.",
                         "Put VAE files in models/VAE (or --vae-dir) and GET /sdapi/v1/sd-vae.")


def normalize_model_overrides(overrides: dict[str, Any] | None, checkpoints: dict[str, CheckpointInfo],
                              paths: Any) -> None:
    """Resolve an overridden checkpoint to its title (404 when unknown) and check an overridden VAE name (422)."""
    if not overrides:
        return
    checkpoint = overrides.get("sd_model_checkpoint")
    if checkpoint:
        overrides["sd_model_checkpoint"] = get_closest_checkpoint_match(str(checkpoint), checkpoints).title
    if overrides.get("sd_vae") is not None:
        overrides["sd_vae"] = check_vae_name(overrides["sd_vae"], paths)


@contextlib.contextmanager
def model_overrides(opts: Options, overrides: dict[str, Any] | None, restore: bool) -> Iterator[None]:
    """Set the overridden model settings for the duration of a job (kept afterwards when ``restore`` is False)."""
    stored: dict[str, Any] = {}
    applied: dict[str, Any] = {}
    for key in MODEL_KEYS:
        value = (overrides or {}).get(key)
        if value in (None, ""):
            continue
        if opts.is_frozen(key):
            log.warning("override_settings: %s is frozen by a command-line flag; not overridden", key)
            continue
        stored[key] = opts.data.get(key, _MISSING)
        opts.data[key] = applied[key] = value
    try:
        yield
    finally:
        if restore:
            for key, value in stored.items():
                if opts.data.get(key) != applied[key]:
                    continue  # changed meanwhile (POST /options, the UI): the newer choice stays
                if value is _MISSING:
                    opts.data.pop(key, None)
                else:
                    opts.data[key] = value
