"""``POST /sdapi/v1/preprocess`` and ``GET /sdapi/v1/preprocessors``: the preprocessors over HTTP.

Added by the extension's ``on_app_started`` when the API is on (``--api`` / ``--nowebui``), behind ``--api-auth``
like the core routes. The work runs on the app's job queue, so it never competes with a generation for the device.
Errors are ``{error, detail, hint}`` JSON: 422 for a bad request (unknown module, bad image or parameter), 424
(Failed Dependency) when the server lacks a weight file or package the module needs — the request itself is right
and would succeed unchanged once the file is in place.
"""

from __future__ import annotations

import base64
import io
import logging
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import JSONResponse
from PIL import Image
from pydantic import BaseModel, Field

from modules.api.api import API_PREFIX, decode_base64_to_image
from modules.api.auth import basic_auth_dependency, parse_api_credentials
from modules.api.http_errors import error_body
from modules.errors import AtelierError

from .api import canonical_name, list_preprocessors, preprocessor_info, run_with_params

log = logging.getLogger(__name__)


class PreprocessRequest(BaseModel):
    image: str = Field(description="The picture: base64, or a data:image/...;base64, URI")
    module: str = Field("none", description="A name from GET /sdapi/v1/preprocessors")
    processor_res: int = Field(512, description="Detection resolution (short side); -1: the picture's own size")
    params: dict[str, Any] = Field(default_factory=dict, description="The module's parameters by name")


class PreprocessResponse(BaseModel):
    images: list[str] = Field(description="The map as base64 PNG")
    module: str = Field(description="The module that ran (its canonical name)")


class PreprocessorsResponse(BaseModel):
    modules: list[dict[str, Any]]
    annotators_dir: str


def picture_array(image: Image.Image) -> np.ndarray:
    """A decoded upload as uint8 RGB, or RGBA when it has transparency (composited on white later)."""
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    return np.asarray(image.convert("RGBA" if has_alpha else "RGB"))


def png_base64(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _error(exc: AtelierError) -> JSONResponse:
    return JSONResponse(error_body(type(exc).__name__, exc.message, exc.hint), status_code=exc.status_code)


def add_routes(app: FastAPI, ctx: Any) -> None:
    """Register the two routes on ``app``; ``ctx`` is the app's ``ApiContext`` (options, folders, job queue)."""
    credentials = parse_api_credentials(getattr(ctx.args, "api_auth", None))
    dependencies = [Depends(basic_auth_dependency(credentials))] if credentials else []
    router = APIRouter(prefix=API_PREFIX, dependencies=dependencies, tags=["preprocessors"])
    folder = ctx.paths.model_dir("annotators")

    def preprocess(req: PreprocessRequest) -> Any:
        """Run one preprocessor on one picture; the map comes back as a base64 PNG."""
        try:
            name = canonical_name(req.module)
            picture = picture_array(decode_base64_to_image(req.image, "image", ctx.opts))
            job = ctx.queue.submit(
                lambda: run_with_params(name, picture, req.processor_res, req.params, folder),
                kind="preprocess", description=f"preprocess ({name})")
            result = job.wait()
        except AtelierError as e:
            return _error(e)
        except Exception as e:  # a detector's own failure: say which, keep the traceback in the log
            log.exception("Preprocessor %s failed", req.module)
            return JSONResponse(error_body(type(e).__name__, f"The {req.module} preprocessor failed: {e}",
                                           "See the server log."), status_code=500)
        return {"images": [png_base64(result)], "module": name}

    def preprocessors() -> dict[str, Any]:
        """Every preprocessor with its parameters and whether it can run now (and why not)."""
        return {"modules": [preprocessor_info(n, folder) for n in list_preprocessors()], "annotators_dir": str(folder)}

    router.add_api_route("/preprocess", preprocess, methods=["POST"], response_model=PreprocessResponse,
                         responses={422: {"description": "Unknown module, bad image or parameter"},
                                    424: {"description": "A weight file or package the module needs is missing"}})
    router.add_api_route("/preprocessors", preprocessors, methods=["GET"], response_model=PreprocessorsResponse)
    app.include_router(router)
