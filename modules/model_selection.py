"""Which checkpoint a generation uses: the `sd_model_checkpoint` setting, else `--ckpt`, else the first one found.

The API and (later) the UI call `current_model()` inside a job, so loading happens on the worker thread.
"""

from __future__ import annotations

from collections.abc import Callable

from modules import sd_models
from modules.errors import ModelNotFound
from modules.options import Options
from modules.sd.loader import StableDiffusionModel


def model_getter(opts: Options, cache: sd_models.ModelCache,
                 checkpoints: Callable[[], dict[str, sd_models.CheckpointInfo]]) -> Callable[[], StableDiffusionModel]:
    """A `get_model()` for the API context; `checkpoints()` returns the current checkpoint list."""

    def current_model() -> StableDiffusionModel:
        models = checkpoints()
        if not models:
            raise ModelNotFound("No checkpoint found.",
                                "Put a .safetensors or .ckpt Stable Diffusion checkpoint in models/Stable-diffusion, "
                                "or start with --ckpt <file>.")
        wanted = opts.sd_model_checkpoint
        info = sd_models.get_closest_checkpoint_match(wanted, models) if wanted else next(iter(models.values()))
        return cache.get(info)

    return current_model
