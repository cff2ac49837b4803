"""Which checkpoint a generation uses: the `sd_model_checkpoint` setting, else `--ckpt`, else the first one found.

The API and the UI call `current_model()` inside a job, so loading happens on the worker thread. The getter also
applies the `sd_vae` setting (:mod:`modules.sd_vae`) and gives the model its textual-inversion database
(``model.extras[EMBEDDING_DB_KEY]``, read from the embeddings folder before each job), so every face gets both.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from modules import sd_models, sd_vae
from modules.errors import ModelNotFound
from modules.options import Options
from modules.processing_prompts import EMBEDDING_DB_KEY
from modules.sd.loader import StableDiffusionModel
from modules.textual_inversion import EmbeddingDatabase


def ensure_embedding_db(model: Any, embeddings_dir: str | os.PathLike[str] | None) -> EmbeddingDatabase | None:
    """The model's embedding database, created (reading ``embeddings_dir``) on first use; None without a folder."""
    database = model.extras.get(EMBEDDING_DB_KEY)
    if database is None and embeddings_dir is not None:
        database = EmbeddingDatabase()
        database.add_embedding_dir(embeddings_dir)
        model.extras[EMBEDDING_DB_KEY] = database
    return database


def prepare_model(model: Any, opts: Options, paths: Any, args: Any) -> Any:
    """Apply the per-job settings that live in the model: the VAE choice and the embeddings database."""
    if paths is None:
        return model
    ensure_embedding_db(model, getattr(paths, "embeddings_dir", None))
    sd_vae.apply_vae_setting(
        model, getattr(opts, "sd_vae", sd_vae.AUTOMATIC), getattr(paths, "vae_dirs", ()),
        vae_path_flag=getattr(args, "vae_path", None),
        allow_unsafe=bool(getattr(args, "disable_safe_unpickle", False)),
        cache_file=getattr(paths, "cache_file", None), no_hashing=bool(getattr(args, "no_hashing", False)))
    return model


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
        model = cache.get(info)
        return prepare_model(model, opts, getattr(cache, "paths", None), getattr(cache, "args", None))

    return current_model
