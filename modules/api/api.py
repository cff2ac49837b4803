"""``/sdapi/v1`` generation routes and the shared plumbing (context, auth, error bodies) of the A1111 API.

Handlers only translate: a request model becomes a processing object, which runs on the job queue; images and
errors are converted back at the edge. Read-only listing routes live in :mod:`modules.api.routes_info`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from PIL import Image

from modules import images
from modules.api import models
from modules.credentials import parse_credentials
from modules.errors import AtelierError, InvalidRequest
from modules.jobs import JobQueue
from modules.options import Options, SettingsError
from modules.processing import (
    Processed,
    StableDiffusionProcessing,
    StableDiffusionProcessingImg2Img,
    StableDiffusionProcessingTxt2Img,
    process_images,
)
from modules.samplers import registry
from modules.samplers.schedulers import find_scheduler
from modules.sd_models import CheckpointInfo, list_models

log = logging.getLogger(__name__)

API_PREFIX = "/sdapi/v1"


@dataclass
class ApiContext:
    """Everything the routes use: settings, folders, flags, the job queue and the current model (no globals)."""

    opts: Options
    paths: Any
    args: argparse.Namespace
    queue: JobQueue
    get_model: Callable[[], Any]
    checkpoints: dict[str, CheckpointInfo] = field(default_factory=dict)

    def refresh_checkpoints(self) -> dict[str, CheckpointInfo]:
        """Rescan the checkpoint folders (A1111's ``refresh_checkpoints``)."""
        self.checkpoints = list_models(self.paths, getattr(self.args, "ckpt", None),
                                       no_hashing=bool(getattr(self.args, "no_hashing", False)))
        return self.checkpoints


# errors -------------------------------------------------------------------------------------------------------------
def error_body(error: str, detail: str, hint: str = "", errors: str = "") -> dict[str, str]:
    return {"error": error, "detail": detail, "hint": hint, "errors": errors or detail}


def _is_api_path(request: Request) -> bool:
    return request.url.path.startswith("/sdapi/")


def add_exception_handlers(app: FastAPI) -> None:
    """Turn typed errors and validation failures into ``{"error", "detail", "hint"}`` JSON with a 4xx status."""

    async def atelier_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AtelierError)
        return JSONResponse(error_body(type(exc).__name__, exc.message, exc.hint), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    async def settings_error(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body(type(exc).__name__, str(exc), "Check the setting's name and value type."),
                            status_code=422)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return JSONResponse(error_body("RequestValidationError", f"Invalid request: {problems}",
                                       "See /docs for the request schema."), status_code=422)

    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("API error on %s", request.url.path)
        return JSONResponse(error_body(type(exc).__name__, str(exc) or type(exc).__name__,
                                       "This is a bug or an internal failure; see the server log."), status_code=500)

    app.add_exception_handler(AtelierError, atelier_error)
    app.add_exception_handler(SettingsError, settings_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected_error)


# auth ---------------------------------------------------------------------------------------------------------------
def parse_api_credentials(text: str | None) -> dict[str, str]:
    """``--api-auth`` as ``{user: password}``."""
    return dict(parse_credentials(text))


def basic_auth_dependency(credentials: dict[str, str]) -> Callable[..., None]:
    """A FastAPI dependency accepting only the given users (401 with ``WWW-Authenticate: Basic`` otherwise)."""
    security = HTTPBasic(auto_error=False)

    def check(given: HTTPBasicCredentials | None = Depends(security)) -> None:  # noqa: B008 - FastAPI idiom
        if given is not None and given.username in credentials and secrets.compare_digest(
                given.password.encode("utf8"), credentials[given.username].encode("utf8")):
            return
        raise _Unauthorized()

    return check


class _Unauthorized(AtelierError):
    status_code = 401
    headers = {"WWW-Authenticate": "Basic"}

    def __init__(self) -> None:
        super().__init__("Incorrect username or password", "Send HTTP Basic credentials listed in --api-auth.")


# images -------------------------------------------------------------------------------------------------------------
def decode_base64_to_image(encoding: str, what: str = "image") -> Image.Image:
    """A b64 string (optionally a ``data:image/...;base64,`` URI) as a PIL image; anything else is a 422."""
    if not isinstance(encoding, str) or not encoding:
        raise InvalidRequest(f"The {what} is empty.", "Send a base64-encoded PNG, JPEG or WebP file.")
    if encoding.startswith(("http://", "https://")):
        raise InvalidRequest(f"The {what} is a URL; fetching URLs is not supported by this server.",
                             "Send the file itself, base64-encoded.")
    if encoding.startswith("data:image/"):
        encoding = encoding.split(";", 1)[1].split(",", 1)[-1]
    try:
        data = base64.b64decode(encoding, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidRequest(f"The {what} is not valid base64 ({e}).",
                             "Send the file base64-encoded, optionally with a data:image/...;base64, prefix.") from e
    return images.decode_image(data)


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


def reject_scripts(req: Any) -> None:
    """No scripts are installed yet, so any named script is an unknown one (A1111 answers 422 too)."""
    if req.script_name:
        raise InvalidRequest(f"Script {req.script_name!r} not found; no selectable scripts are installed.",
                             "Leave script_name empty.")
    if req.alwayson_scripts:
        names = ", ".join(repr(n) for n in req.alwayson_scripts)
        raise InvalidRequest(f"Always-on script(s) {names} not found; no always-on scripts are installed.",
                             "Leave alwayson_scripts empty.")


def processing_args(req: Any, ctx: ApiContext, exclude: set[str]) -> dict[str, Any]:
    """The request as keyword arguments of a processing class, after validation."""
    validate_limits(req, ctx.opts)
    reject_scripts(req)
    args = req.model_dump(exclude={*models.API_EXTRA_FIELDS, *exclude})
    args["sampler_name"], args["scheduler"] = resolve_sampler(req.sampler_name, req.sampler_index, req.scheduler)
    args["do_not_save_samples"] = args["do_not_save_grid"] = not req.save_images
    if isinstance(args.get("firstpass_image"), str):
        args["firstpass_image"] = decode_base64_to_image(args["firstpass_image"], "firstpass_image")
    unknown = [k for k in (req.override_settings or {}) if k not in ctx.opts.data_labels]
    if unknown:
        raise InvalidRequest(f"override_settings has unknown setting(s): {', '.join(unknown)}.",
                             "GET /sdapi/v1/options lists the setting names.")
    return {k: v for k, v in args.items() if v is not None or k in ("sampler_name", "scheduler")}


def run_on_queue(p: StableDiffusionProcessing, ctx: ApiContext, kind: str, task_id: str | None) -> Processed:
    """Run ``process_images`` on the job queue's worker and wait for it (never in the request thread)."""

    def job() -> Processed:
        p.sd_model = ctx.get_model()
        p.opts, p.state, p.paths, p.is_api = ctx.opts, ctx.queue.state, ctx.paths, True
        return process_images(p)

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
        from modules.api import routes_info

        self.app, self.ctx = app, context
        credentials = parse_api_credentials(getattr(context.args, "api_auth", None))
        dependencies = [Depends(basic_auth_dependency(credentials))] if credentials else []
        self.router = APIRouter(prefix=API_PREFIX, dependencies=dependencies,
                                responses={422: {"model": models.ErrorResponse}})
        add = self.router.add_api_route
        add("/txt2img", self.text2imgapi, methods=["POST"], response_model=models.ImageResponse)
        add("/img2img", self.img2imgapi, methods=["POST"], response_model=models.ImageResponse)
        routes_info.add_routes(self.router, context)
        app.include_router(self.router)
        add_exception_handlers(app)

        @app.middleware("http")
        async def process_time(request: Request, call_next: Callable[..., Any]) -> Any:
            started = time.perf_counter()
            response = await call_next(request)
            if _is_api_path(request):
                response.headers["X-Process-Time"] = f"{time.perf_counter() - started:.4f}"
            return response

    def text2imgapi(self, req: models.StableDiffusionTxt2ImgProcessingAPI) -> dict[str, Any]:  # type: ignore[valid-type]
        """txt2img: A1111's request fields in, ``{images, parameters, info}`` out."""
        args = processing_args(req, self.ctx, exclude=set())
        p = StableDiffusionProcessingTxt2Img(**args)
        processed = run_on_queue(p, self.ctx, "txt2img", req.force_task_id)
        return image_response(req, processed, self.ctx, exclude=set())

    def img2imgapi(self, req: models.StableDiffusionImg2ImgProcessingAPI) -> dict[str, Any]:  # type: ignore[valid-type]
        """img2img: like txt2img plus ``init_images`` (and optional ``mask``) as base64."""
        if not req.init_images:
            raise InvalidRequest("img2img needs at least one image in init_images.", "Send init_images: [<base64>].")
        args = processing_args(req, self.ctx, exclude={"init_images", "mask", "latent_mask", "include_init_images"})
        args["init_images"] = [decode_base64_to_image(x, f"init_images[{i}]") for i, x in enumerate(req.init_images)]
        if req.mask:
            args["mask"] = decode_base64_to_image(req.mask, "mask")
        if req.latent_mask:
            args["latent_mask"] = decode_base64_to_image(req.latent_mask, "latent_mask")
        p = StableDiffusionProcessingImg2Img(**args)
        processed = run_on_queue(p, self.ctx, "img2img", req.force_task_id)
        exclude = set() if req.include_init_images else {"init_images"}
        return image_response(req, processed, self.ctx, exclude={*exclude, "mask"})
