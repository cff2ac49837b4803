"""``/sdapi/v1`` generation routes and the shared plumbing (context, images, the job runner) of the A1111 API.

Handlers only translate: a request model becomes a processing object, which runs on the job queue; images and
errors are converted back at the edge. Other routes live beside this module: ``routes_info`` (state, settings,
lists), ``routes_models`` (VAE, embeddings, styles, checkpoint unload/reload), ``routes_extras`` (upscaling) and
``routes_scripts`` (scripts, extensions).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from PIL import Image

from modules import images
from modules.api import image_fetch, job_overrides, models
from modules.api.auth import basic_auth_dependency, parse_api_credentials
from modules.api.http_errors import add_exception_handlers, error_body
from modules.api.request_infotext import apply_infotext
from modules.errors import AtelierError, InvalidRequest
from modules.jobs import JobQueue
from modules.options import Options
from modules.processing import (
    Processed,
    StableDiffusionProcessing,
    StableDiffusionProcessingImg2Img,
    StableDiffusionProcessingTxt2Img,
)
from modules.samplers import registry
from modules.samplers.schedulers import find_scheduler
from modules.sd_models import CheckpointInfo, list_models

__all__ = ["API_PREFIX", "Api", "ApiContext", "add_exception_handlers", "basic_auth_dependency",
           "decode_base64_to_image", "encode_pil_to_base64", "error_body", "parse_api_credentials",
           "processing_args", "run_on_queue"]

log = logging.getLogger(__name__)

API_PREFIX = "/sdapi/v1"


def _no_scripts() -> list[dict[str, Any]]:
    return []


@dataclass
class ApiContext:
    """Everything the routes use: settings, folders, flags, the job queue and the current model (no globals).

    ``scripts_info`` and ``extensions_info`` are filled by the extension system (A1111's ``script_info`` items and
    extension items); until then no scripts are listed and extensions are read from their folders.
    ``prepare_scripts(p, "txt2img"|"img2img", request)`` sets ``p.scripts``/``p.script_args`` for a request (a
    ``ValueError`` is a 422). ``model_cache`` (``sd_models.ModelCache``) enables unload/reload-checkpoint.
    """

    opts: Options
    paths: Any
    args: argparse.Namespace
    queue: JobQueue
    get_model: Callable[[], Any]
    checkpoints: dict[str, CheckpointInfo] = field(default_factory=dict)
    model_cache: Any = None
    scripts_info: Callable[[], list[dict[str, Any]]] = _no_scripts
    extensions_info: Callable[[], list[dict[str, Any]]] | None = None
    prepare_scripts: Callable[[Any, str, Any], None] | None = None

    def __post_init__(self) -> None:
        if self.extensions_info is None:
            from modules.api.extensions_scan import scan_extensions

            self.extensions_info = lambda: scan_extensions(self.paths, self.opts)

    def refresh_checkpoints(self) -> dict[str, CheckpointInfo]:
        """Rescan the checkpoint folders (A1111's ``refresh_checkpoints``)."""
        self.checkpoints = list_models(self.paths, getattr(self.args, "ckpt", None),
                                       no_hashing=bool(getattr(self.args, "no_hashing", False)))
        return self.checkpoints


# images -------------------------------------------------------------------------------------------------------------
def decode_base64_to_image(encoding: str, what: str = "image", opts: Options | None = None) -> Image.Image:
    """A b64 string (optionally a ``data:image/...;base64,`` URI) as a PIL image; anything else is a 422.

    An http(s) URL is fetched when ``opts`` allows it (``api_enable_requests``; ``api_forbid_local_requests``
    refuses hosts with non-global addresses).
    """
    if not isinstance(encoding, str) or not encoding:
        raise InvalidRequest(f"The {what} is empty.", "Send a base64-encoded PNG, JPEG or WebP file.")
    if image_fetch.is_url(encoding):
        if opts is None or not opts.api_enable_requests:
            raise InvalidRequest(f"The {what} is a URL; fetching URLs is turned off on this server "
                                 "(setting api_enable_requests).", "Send the file itself, base64-encoded.")
        data = image_fetch.fetch_image_bytes(encoding, forbid_local=bool(opts.api_forbid_local_requests), what=what)
        return _decode_image(data, what)
    if encoding.startswith("data:image/"):
        encoding = encoding.split(";", 1)[1].split(",", 1)[-1]
    try:
        data = base64.b64decode(encoding, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidRequest(f"The {what} is not valid base64 ({e}).",
                             "Send the file base64-encoded, optionally with a data:image/...;base64, prefix.") from e
    return _decode_image(data, what)


def _decode_image(data: bytes, what: str) -> Image.Image:
    try:
        return images.decode_image(data)
    except InvalidRequest as e:
        raise InvalidRequest(f"{what}: {e.message}", e.hint) from e


def encode_pil_to_base64(image: Image.Image, opts: Options, infotext: str | None = None) -> str:
    """The image in ``opts.samples_format`` as base64, carrying its infotext like a saved file does."""
    fmt = str(opts.samples_format).lower()
    if fmt not in ("png", "jpg", "jpeg", "webp"):
        fmt = "png"
    buffer = io.BytesIO()
    images.save_image_with_geninfo(image, infotext, buffer, extension=f".{fmt}", opts=opts)  # type: ignore[arg-type]
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# request → processing ---------------------------------------------------------------------------------------------
def validate_limits(req: Any, opts: Options) -> None:
    """Size, steps and batch limits from the ``api_max_*`` settings; each failure is a 422 saying the limit."""
    width, height = int(req.width), int(req.height)
    if width <= 0 or height <= 0 or width % 8 or height % 8:
        raise InvalidRequest(f"width and height must be positive multiples of 8, got {width}x{height}.",
                             "Round the size to a multiple of 8, e.g. 512x512.")
    if width * height > opts.api_max_pixels:
        raise InvalidRequest(f"{width}x{height} is more than api_max_pixels ({opts.api_max_pixels}) pixels.",
                             "Ask for a smaller image or raise the api_max_pixels setting.")
    limits = (("steps", opts.api_max_steps), ("batch_size", opts.api_max_batch_size),
              ("n_iter", opts.api_max_n_iter))
    for key, limit in limits:
        value = int(getattr(req, key))
        if value < 1 or value > limit:
            raise InvalidRequest(f"{key} must be between 1 and {limit}, got {value}.",
                                 f"Lower {key} or raise the api_max_{key} setting.")


def resolve_sampler(sampler_name: str | None, sampler_index: str | None, scheduler: str | None) -> tuple[str, str]:
    """(sampler name, scheduler label) for a request; unknown names are a 422 listing the valid ones."""
    name = sampler_name or sampler_index or "Euler"
    try:
        sampler, legacy_scheduler = registry.split_sampler_scheduler(name)
        found = find_scheduler(legacy_scheduler or scheduler)
    except ValueError as e:
        text = str(e)
        raise InvalidRequest(f"{text[:1].upper()}{text[1:]}.",
                             "Use GET /sdapi/v1/samplers and /sdapi/v1/schedulers.") from e
    return sampler, found.label


def check_scripts(req: Any, ctx: ApiContext, is_img2img: bool) -> None:
    """Named scripts must be installed for this tab (A1111 answers 422 too), and runnable through the API."""
    tab = [s for s in ctx.scripts_info() if bool(s.get("is_img2img")) == is_img2img and s.get("name")]
    selectable = {str(s["name"]).lower(): s for s in tab if not s.get("is_alwayson")}
    alwayson = {str(s["name"]).lower(): s for s in tab if s.get("is_alwayson")}
    if req.script_name and str(req.script_name).lower() not in selectable:
        valid = ", ".join(repr(str(s["name"])) for s in selectable.values()) or "none are installed"
        raise InvalidRequest(f"Script {req.script_name!r} not found. Selectable scripts: {valid}.",
                             "GET /sdapi/v1/scripts lists them; leave script_name empty for none.")
    unknown = [n for n in (req.alwayson_scripts or {}) if str(n).lower() not in alwayson]
    if unknown:
        valid = ", ".join(repr(str(s["name"])) for s in alwayson.values()) or "none are installed"
        raise InvalidRequest(f"Always-on script(s) {', '.join(repr(n) for n in unknown)} not found. "
                             f"Always-on scripts: {valid}.", "GET /sdapi/v1/script-info lists them.")
    if (req.script_name or req.alwayson_scripts) and ctx.prepare_scripts is None:
        raise InvalidRequest("Scripts cannot be run through the API on this server yet.",
                             "Leave script_name and alwayson_scripts empty.")


def processing_args(req: Any, ctx: ApiContext, exclude: set[str]) -> dict[str, Any]:
    """The request as keyword arguments of a processing class, after validation."""
    validate_limits(req, ctx.opts)
    check_scripts(req, ctx, is_img2img="init_images" in type(req).model_fields)
    args = req.model_dump(exclude={*models.API_EXTRA_FIELDS, *exclude})
    args["sampler_name"], args["scheduler"] = resolve_sampler(req.sampler_name, req.sampler_index, req.scheduler)
    args["do_not_save_samples"] = args["do_not_save_grid"] = not req.save_images
    if isinstance(args.get("firstpass_image"), str):
        args["firstpass_image"] = decode_base64_to_image(args["firstpass_image"], "firstpass_image", ctx.opts)
    unknown = [k for k in (req.override_settings or {}) if k not in ctx.opts.data_labels]
    if unknown:
        raise InvalidRequest(f"override_settings has unknown setting(s): {', '.join(unknown)}.",
                             "GET /sdapi/v1/options lists the setting names.")
    job_overrides.normalize_model_overrides(args.get("override_settings"), ctx.checkpoints, ctx.paths)
    return {k: v for k, v in args.items() if v is not None or k in ("sampler_name", "scheduler")}


def prepare_scripts(p: StableDiffusionProcessing, req: Any, ctx: ApiContext, kind: str) -> None:
    """Let the extension system attach its script runner and the request's script arguments to ``p``."""
    if ctx.prepare_scripts is None:
        return
    try:
        ctx.prepare_scripts(p, kind, req)
    except AtelierError:
        raise
    except ValueError as e:
        raise InvalidRequest(str(e), "GET /sdapi/v1/script-info lists the scripts and their arguments.") from e


def _process(p: StableDiffusionProcessing) -> Processed:
    """A selected script's ``run`` (A1111's ``ScriptRunner.run``), else plain ``process_images``."""
    from modules.scripts import process_with_scripts

    return process_with_scripts(p)


def run_on_queue(p: StableDiffusionProcessing, ctx: ApiContext, kind: str, task_id: str | None) -> Processed:
    """Run ``process_images`` on the job queue's worker and wait for it (never in the request thread).

    ``override_settings`` for ``sd_model_checkpoint`` / ``sd_vae`` are in effect while the job's model is fetched and
    used, and put back afterwards unless ``p.override_settings_restore_afterwards`` is False.
    """

    def job() -> Processed:
        with job_overrides.model_overrides(ctx.opts, p.override_settings, p.override_settings_restore_afterwards):
            p.sd_model = ctx.get_model()
            p.opts, p.state, p.paths, p.is_api = ctx.opts, ctx.queue.state, ctx.paths, True
            return _process(p)

    return ctx.queue.submit(job, kind=kind, task_id=task_id, description=kind).wait()


def image_response(req: Any, processed: Processed, ctx: ApiContext, exclude: set[str]) -> dict[str, Any]:
    infotexts = processed.infotexts
    encoded = [encode_pil_to_base64(img, ctx.opts, infotexts[i] if i < len(infotexts) else processed.info)
               for i, img in enumerate(processed.images)] if req.send_images else []
    return {"images": encoded, "parameters": req.model_dump(exclude=exclude), "info": processed.js()}


# routes -------------------------------------------------------------------------------------------------------------
class Api:
    """Registers A1111's ``/sdapi/v1`` routes on ``app``; with ``--api-auth`` every route needs HTTP Basic."""

    def __init__(self, app: FastAPI, context: ApiContext) -> None:
        from modules.api import routes_extras, routes_info, routes_models, routes_scripts

        self.app, self.ctx = app, context
        credentials = parse_api_credentials(getattr(context.args, "api_auth", None))
        dependencies = [Depends(basic_auth_dependency(credentials))] if credentials else []
        self.router = APIRouter(prefix=API_PREFIX, dependencies=dependencies,
                                responses={422: {"model": models.ErrorResponse}})
        add = self.router.add_api_route
        add("/txt2img", self.text2imgapi, methods=["POST"], response_model=models.ImageResponse)
        add("/img2img", self.img2imgapi, methods=["POST"], response_model=models.ImageResponse)
        for module in (routes_info, routes_models, routes_extras, routes_scripts):
            module.add_routes(self.router, context)
        app.include_router(self.router)
        add_exception_handlers(app)

        @app.middleware("http")
        async def process_time(request: Request, call_next: Callable[..., Any]) -> Any:
            started = time.perf_counter()
            response = await call_next(request)
            if request.url.path.startswith("/sdapi/"):
                response.headers["X-Process-Time"] = f"{time.perf_counter() - started:.4f}"
            return response

    def text2imgapi(self, req: models.StableDiffusionTxt2ImgProcessingAPI) -> dict[str, Any]:  # type: ignore[valid-type]
        """txt2img: A1111's request fields in (``infotext`` fills unset ones), ``{images, parameters, info}`` out."""
        apply_infotext(req, self.ctx.opts, self.ctx.checkpoints)
        p = StableDiffusionProcessingTxt2Img(**processing_args(req, self.ctx, exclude=set()))
        prepare_scripts(p, req, self.ctx, "txt2img")
        processed = run_on_queue(p, self.ctx, "txt2img", req.force_task_id)
        return image_response(req, processed, self.ctx, exclude=set())

    def img2imgapi(self, req: models.StableDiffusionImg2ImgProcessingAPI) -> dict[str, Any]:  # type: ignore[valid-type]
        """img2img: like txt2img plus ``init_images`` (and optional ``mask``) as base64 or (if allowed) URLs."""
        if not req.init_images:
            raise InvalidRequest("img2img needs at least one image in init_images.", "Send init_images: [<base64>].")
        apply_infotext(req, self.ctx.opts, self.ctx.checkpoints)
        args = processing_args(req, self.ctx, exclude={"init_images", "mask", "latent_mask", "include_init_images"})
        opts = self.ctx.opts
        args["init_images"] = [decode_base64_to_image(x, f"init_images[{i}]", opts) for i, x in
                               enumerate(req.init_images)]
        if req.mask:
            args["mask"] = decode_base64_to_image(req.mask, "mask", opts)
        if req.latent_mask:
            args["latent_mask"] = decode_base64_to_image(req.latent_mask, "latent_mask", opts)
        p = StableDiffusionProcessingImg2Img(**args)
        prepare_scripts(p, req, self.ctx, "img2img")
        processed = run_on_queue(p, self.ctx, "img2img", req.force_task_id)
        exclude = set() if req.include_init_images else {"init_images"}
        return image_response(req, processed, self.ctx, exclude={*exclude, "mask"})
