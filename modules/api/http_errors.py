"""Error bodies of the ``/sdapi`` routes: typed errors and validation failures become ``{error, detail, hint}`` JSON."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from modules.errors import AtelierError
from modules.options import SettingsError

log = logging.getLogger(__name__)


def error_body(error: str, detail: str, hint: str = "", errors: str = "") -> dict[str, str]:
    return {"error": error, "detail": detail, "hint": hint, "errors": errors or detail}


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


class Conflict(AtelierError):
    """The request cannot be served in the server's current set-up (e.g. no model cache to unload)."""

    status_code = 409
