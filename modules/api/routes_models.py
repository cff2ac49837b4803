"""``/sdapi/v1`` routes about what the model uses: VAE files, textual-inversion embeddings, prompt styles, and
unloading/reloading the checkpoint. Anything that touches the model runs on the job queue's worker."""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path
from typing import Any

from fastapi import APIRouter

from modules import sd_vae
from modules.api import models
from modules.api.api import ApiContext
from modules.api.http_errors import Conflict
from modules.processing_prompts import EMBEDDING_DB_KEY
from modules.styles import StyleDatabase

log = logging.getLogger(__name__)


def vae_items(ctx: ApiContext) -> list[dict[str, str]]:
    """A1111's ``sd-vae`` list: file name and full path of every VAE file in the VAE folders."""
    files = sd_vae.list_vae_files(getattr(ctx.paths, "vae_dirs", ()))
    return [{"model_name": name, "filename": str(path)} for name, path in files.items()]


def _embedding_item(embedding: Any) -> dict[str, Any]:
    return {"step": embedding.step, "sd_checkpoint": embedding.sd_checkpoint,
            "sd_checkpoint_name": embedding.sd_checkpoint_name, "shape": embedding.shape,
            "vectors": embedding.num_vectors}


def embeddings_report(ctx: ApiContext, force_reload: bool = False) -> dict[str, Any]:
    """Loaded and skipped (wrong width) embeddings of the current model's database, read on the worker."""

    def job() -> dict[str, Any]:
        model = ctx.get_model()
        database = model.extras.get(EMBEDDING_DB_KEY) if model is not None else None
        if database is None:
            return {"loaded": {}, "skipped": {}}
        database.load_textual_inversion_embeddings(force_reload=force_reload, model=model)
        return {"loaded": {name: _embedding_item(e) for name, e in database.word_embeddings.items()},
                "skipped": {name: _embedding_item(e) for name, e in database.skipped_embeddings.items()}}

    return ctx.queue.submit(job, kind="embeddings", description="embeddings").wait()


def style_files(ctx: ApiContext) -> list[Path]:
    """The styles CSV files: every ``--styles-file`` (wildcards allowed), else the default ``styles.csv``."""
    flagged = [str(f) for f in (getattr(ctx.args, "styles_file", None) or [])]
    if not flagged:
        return [Path(ctx.paths.styles_file)]
    files: list[Path] = []
    for pattern in flagged:
        expanded = os.path.expanduser(pattern)
        matches = sorted(glob.glob(expanded)) if glob.has_magic(expanded) else [expanded]
        files += [Path(m).resolve() for m in matches]
    return list(dict.fromkeys(files))


def prompt_style_items(ctx: ApiContext) -> list[dict[str, str]]:
    """Every style of every styles file (a later file's style replaces an earlier one of the same name)."""
    styles: dict[str, dict[str, str]] = {}
    for path in style_files(ctx):
        try:
            database = StyleDatabase(path)
        except (OSError, UnicodeDecodeError) as e:
            log.warning("Styles file %s could not be read: %s", path, e)
            continue
        for style in database.styles.values():
            styles[style.name] = {"name": style.name, "prompt": style.prompt,
                                  "negative_prompt": style.negative_prompt}
    return list(styles.values())


def _require_cache(ctx: ApiContext, action: str) -> Any:
    if ctx.model_cache is None:
        raise Conflict(f"This server cannot {action} the checkpoint: it was started without a model cache.",
                       "Start Atelier normally (webui) rather than with a fixed model.")
    return ctx.model_cache


def add_routes(router: APIRouter, ctx: ApiContext) -> None:
    """Register the VAE, embeddings, styles and checkpoint load/unload routes on ``router``."""
    add = router.add_api_route

    def refresh_vae() -> None:
        ctx.queue.submit(lambda: vae_items(ctx), kind="refresh", description="refresh-vae").wait()

    def refresh_embeddings() -> None:
        embeddings_report(ctx, force_reload=True)

    def unload_checkpoint() -> dict[str, Any]:
        cache = _require_cache(ctx, "unload")
        ctx.queue.submit(cache.unload, kind="unload", description="unload-checkpoint").wait()
        return {}

    def reload_checkpoint() -> dict[str, Any]:
        _require_cache(ctx, "reload")
        ctx.queue.submit(ctx.get_model, kind="reload", description="reload-checkpoint").wait()
        return {}

    add("/sd-vae", lambda: vae_items(ctx), methods=["GET"], response_model=list[models.SDVaeItem])
    add("/refresh-vae", refresh_vae, methods=["POST"])
    add("/embeddings", lambda: embeddings_report(ctx), methods=["GET"], response_model=models.EmbeddingsResponse)
    add("/refresh-embeddings", refresh_embeddings, methods=["POST"])
    add("/prompt-styles", lambda: prompt_style_items(ctx), methods=["GET"],
        response_model=list[models.PromptStyleItem])
    add("/unload-checkpoint", unload_checkpoint, methods=["POST"])
    add("/reload-checkpoint", reload_checkpoint, methods=["POST"])
