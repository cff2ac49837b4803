"""``/sdapi/v1`` routes that report or change server state: png-info, progress, interrupt/skip, options, lists, memory.

Each handler reads the :class:`~modules.api.api.ApiContext`; nothing here generates images.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body
from PIL import Image

from modules import images
from modules.api import models
from modules.api.api import ApiContext, decode_base64_to_image
from modules.api.job_overrides import check_vae_name
from modules.errors import InvalidRequest
from modules.infotext import parse_generation_parameters
from modules.options import SettingsError
from modules.samplers import registry
from modules.samplers.schedulers import schedulers
from modules.sd_models import get_closest_checkpoint_match
from modules.upscaling import latent_upscale_modes, list_upscalers


def _json_safe(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return str(value)


def png_info(req: models.PNGInfoRequest) -> dict[str, Any]:
    """The infotext, other metadata and parsed parameters of an image."""
    image = decode_base64_to_image(req.image)
    geninfo, items = images.read_info_from_image(image)
    geninfo = geninfo or ""
    parameters = parse_generation_parameters(geninfo) if geninfo else {}
    return {"info": geninfo, "items": _json_safe(items), "parameters": _json_safe(parameters)}


def progress_of(ctx: ApiContext, skip_current_image: bool) -> dict[str, Any]:
    """A1111's progress report of the running job (zeros when idle)."""
    state = ctx.queue.state
    progress = state.progress()
    started = state.time_start
    elapsed = time.time() - started if started else 0.0
    eta_relative = elapsed / progress - elapsed if progress > 0.01 else 0.0
    current_image = None
    image = state.current_image
    if not skip_current_image and isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        current_image = base64.b64encode(buffer.getvalue()).decode("ascii")
    return {"progress": progress, "eta_relative": eta_relative, "state": state.dict(),
            "current_image": current_image, "textinfo": state.textinfo}


def all_options(ctx: ApiContext) -> dict[str, Any]:
    opts = ctx.opts
    values = {key: opts.data.get(key, info.default) for key, info in opts.data_labels.items()}
    return _json_safe({**opts.data, **values})


def set_options(ctx: ApiContext, changes: dict[str, Any]) -> bool:
    """Check every change first (unknown, frozen, wrong type → 422, nothing applied), then apply and save."""
    opts = ctx.opts
    problems: list[str] = []
    casted: dict[str, Any] = {}
    for key, value in changes.items():
        info = opts.data_labels.get(key)
        if info is None:
            problems.append(f"unknown setting {key!r}")
        elif opts.is_frozen(key):
            problems.append(f"setting {key!r} is frozen by a command-line flag")
        elif info.restrict_api:
            problems.append(f"setting {key!r} cannot be changed through the API")
        else:
            try:
                casted[key] = opts.cast_value(key, value)
            except SettingsError as e:
                problems.append(str(e))
    checkpoint = casted.get("sd_model_checkpoint")
    if checkpoint:
        casted["sd_model_checkpoint"] = get_closest_checkpoint_match(checkpoint, ctx.checkpoints).title
    if casted.get("sd_vae") is not None:
        try:
            casted["sd_vae"] = check_vae_name(casted["sd_vae"], ctx.paths)
        except InvalidRequest as e:
            problems.append(e.message)
    if problems:
        raise InvalidRequest("Settings not changed: " + "; ".join(problems) + ".",
                             "GET /sdapi/v1/options shows every setting with a value of the right type.")
    for key, value in casted.items():
        opts.set(key, value, is_api=True)
    settings_file = getattr(ctx.paths, "settings_file", None)
    if settings_file is not None:
        opts.save(settings_file)
    return True


def cmd_flags(args: argparse.Namespace) -> dict[str, Any]:
    return {k: _json_safe(str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}


def sampler_items() -> list[dict[str, Any]]:
    return [{"name": s.name, "aliases": list(s.aliases), "options": _json_safe(dict(s.options))}
            for s in registry.all_samplers()]


def scheduler_items() -> list[dict[str, Any]]:
    return [{"name": s.name, "label": s.label, "aliases": list(s.aliases) or None, "default_rho": s.default_rho,
             "need_inner_model": s.need_inner_model} for s in schedulers]


def upscaler_items(ctx: ApiContext) -> list[dict[str, Any]]:
    folder = ctx.paths.model_dir("ESRGAN") if hasattr(ctx.paths, "model_dir") else None
    found = list_upscalers([folder] if folder is not None else [])
    return [{"name": u.name, "model_name": u.path.stem if u.path else None,
             "model_path": str(u.path) if u.path else None, "model_url": None, "scale": u.scale} for u in found]


def sd_model_items(ctx: ApiContext) -> list[dict[str, Any]]:
    return [{"title": c.title, "model_name": c.model_name, "hash": c.shorthash, "sha256": c.sha256,
             "filename": c.filename, "config": None} for c in ctx.checkpoints.values()]


def memory_report() -> dict[str, Any]:
    """RAM of the system and this process, and torch CUDA memory when a GPU is there."""
    try:
        import psutil

        vm = psutil.virtual_memory()
        ram: dict[str, Any] = {"free": vm.available, "used": psutil.Process(os.getpid()).memory_info().rss,
                               "total": vm.total}
    except Exception as e:
        ram = {"error": f"{e}"}
    try:
        import torch

        if not torch.cuda.is_available():
            return {"ram": ram, "cuda": {"error": "unavailable"}}
        free, total = torch.cuda.mem_get_info()
        stats = torch.cuda.memory_stats()
        cuda = {
            "system": {"free": free, "used": total - free, "total": total},
            "active": {"current": stats.get("active_bytes.all.current", 0),
                       "peak": stats.get("active_bytes.all.peak", 0)},
            "allocated": {"current": stats.get("allocated_bytes.all.current", 0),
                          "peak": stats.get("allocated_bytes.all.peak", 0)},
            "reserved": {"current": stats.get("reserved_bytes.all.current", 0),
                         "peak": stats.get("reserved_bytes.all.peak", 0)},
            "inactive": {"current": stats.get("inactive_split_bytes.all.current", 0),
                         "peak": stats.get("inactive_split_bytes.all.peak", 0)},
            "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)},
        }
    except Exception as e:
        cuda = {"error": f"{e}"}
    return {"ram": ram, "cuda": cuda}


def add_routes(router: APIRouter, ctx: ApiContext) -> None:
    """Register the informational and control routes on ``router``."""
    add = router.add_api_route

    def progress(skip_current_image: bool = False) -> dict[str, Any]:
        return progress_of(ctx, skip_current_image)

    def interrupt() -> dict[str, Any]:
        ctx.queue.interrupt()
        return {}

    def skip() -> dict[str, Any]:
        ctx.queue.skip()
        return {}

    def get_options() -> dict[str, Any]:
        return all_options(ctx)

    def post_options(req: dict[str, Any] = Body(...)) -> bool:  # noqa: B008 - FastAPI idiom
        return set_options(ctx, req)

    def refresh_checkpoints() -> None:
        ctx.queue.submit(ctx.refresh_checkpoints, kind="refresh", description="refresh-checkpoints").wait()

    add("/png-info", png_info, methods=["POST"], response_model=models.PNGInfoResponse)
    add("/progress", progress, methods=["GET"], response_model=models.ProgressResponse)
    add("/interrupt", interrupt, methods=["POST"])
    add("/skip", skip, methods=["POST"])
    add("/options", get_options, methods=["GET"], response_model=dict[str, Any])
    add("/options", post_options, methods=["POST"])
    add("/cmd-flags", lambda: cmd_flags(ctx.args), methods=["GET"], response_model=dict[str, Any])
    add("/samplers", sampler_items, methods=["GET"], response_model=list[models.SamplerItem])
    add("/schedulers", scheduler_items, methods=["GET"], response_model=list[models.SchedulerItem])
    add("/upscalers", lambda: upscaler_items(ctx), methods=["GET"], response_model=list[models.UpscalerItem])
    add("/latent-upscale-modes", lambda: [{"name": k} for k in latent_upscale_modes], methods=["GET"],
        response_model=list[models.LatentUpscalerModeItem])
    add("/sd-models", lambda: sd_model_items(ctx), methods=["GET"], response_model=list[models.SDModelItem])
    add("/refresh-checkpoints", refresh_checkpoints, methods=["POST"])
    add("/memory", memory_report, methods=["GET"], response_model=models.MemoryResponse)
