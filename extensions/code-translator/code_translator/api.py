"""HTTP face: ``POST /code-translator/v1/translate`` (JSON in; streamed text or JSON out), plus the language list
and the models a backend offers. Added to the app from ``on_app_started``.

Streamed text: failures before any output come back as a 4xx/5xx JSON body; a failure after output has started
can no longer change the status, so the text ends with a line ``[code-translator error] <message>``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, Literal

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from code_translator.errors import InvalidTranslationRequest, TranslationError, UnknownModel, VerifyRefused
from code_translator.languages import LANGUAGES
from code_translator.local_backend import local_model_names
from code_translator.runtimes import RUNTIMES, runtime_missing
from code_translator.server_backend import ServerSettings, list_models
from code_translator.settings import (
    LOCAL,
    SERVER,
    HostContext,
    TranslatorConfig,
    config_from_opts,
    make_backend,
    resolve_api_key,
    run_allowed,
)
from code_translator.translator import MAX_REPAIR_ROUNDS, TranslationJob, Update, translate

PREFIX = "/code-translator/v1"
ERROR_MARK = "[code-translator error]"


class TranslateRequest(BaseModel):
    input_language: str = Field(description="e.g. 'Python', or 'Natural Language' to write code from a description")
    output_language: str = Field(description="e.g. 'JavaScript', or 'Natural Language' for an explanation")
    code: str
    backend: Literal["server", "local"] = "server"
    model: str | None = Field(None, description="server model name, or a folder under models/code-translator")
    base_url: str | None = Field(None, description="OpenAI-compatible base URL; default from Settings")
    api_key: str | None = Field(None, description="default: OPENAI_API_KEY, for the configured server only")
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=0)
    timeout: float | None = Field(None, gt=0, le=3600)
    chunk_tokens: int | None = Field(None, ge=64)
    stream: bool = Field(True, description="true: plain text as it arrives; false: one JSON object at the end")
    verify_inputs: str | None = Field(None, description="stdin cases separated by '---' lines: run both programs")
    repair_rounds: int = Field(0, ge=0, le=MAX_REPAIR_ROUNDS)


def _error_body(exc: TranslationError, output: str, status: str) -> dict[str, Any]:
    body: dict[str, Any] = {"error": type(exc).__name__, "detail": exc.message, "hint": exc.hint,
                            "output": output, "status": status or exc.message}
    if isinstance(exc, UnknownModel):
        body["available_models"] = exc.available
    return body


def error_response(exc: TranslationError, output: str = "", status: str = "") -> JSONResponse:
    return JSONResponse(_error_body(exc, output, status), status_code=exc.status_code)


def _config(req: TranslateRequest, configured: TranslatorConfig) -> TranslatorConfig:
    return TranslatorConfig(
        base_url=(req.base_url or configured.base_url).strip(),
        model=(req.model if req.model is not None else configured.model).strip(),
        temperature=configured.temperature if req.temperature is None else req.temperature,
        max_tokens=configured.max_tokens if req.max_tokens is None else req.max_tokens,
        timeout_s=configured.timeout_s if req.timeout is None else req.timeout,
        chunk_tokens=configured.chunk_tokens if req.chunk_tokens is None else req.chunk_tokens,
        run_timeout_s=configured.run_timeout_s,
    )


def _json_result(last: Update) -> JSONResponse:
    body: dict[str, Any] = {"output": last.output, "status": last.status, "error": None}
    if last.error is not None:
        body.update(_error_body(last.error, last.output, last.status))
    if last.report is not None:
        body["verify"] = {"passed": last.report.passed, "source_output": last.report.source_output(),
                          "translation_output": last.report.translation_output(), "diff": last.report.diff()}
    return JSONResponse(body, status_code=200 if last.error is None else last.error.status_code)


def _text_stream(first: list[Update], rest: Iterator[Update], cancel: threading.Event) -> Iterator[str]:
    try:
        for update in first:
            if update.delta:
                yield update.delta
        for update in rest:
            if update.delta:
                yield update.delta
            if update.error is not None:
                yield f"\n{ERROR_MARK} {update.status}\n"
    finally:
        cancel.set()  # the client went away or the stream ended: stop the backend


def add_routes(app: FastAPI, context: HostContext) -> None:
    """Register the translator's routes on ``app``."""
    router = APIRouter(prefix=PREFIX, tags=["code translator"])

    @router.get("/languages")
    def languages() -> dict[str, Any]:
        return {"languages": LANGUAGES, "runnable": [lang for lang in RUNTIMES if runtime_missing(lang) is None]}

    @router.get("/models")
    def models(backend: Literal["server", "local"] = "server", base_url: str | None = None,
               api_key: str | None = None) -> Any:
        configured = config_from_opts(context.get_opts())
        if backend == LOCAL:
            folder = context.models_dir()
            return {"backend": LOCAL, "models": local_model_names(folder) if folder else []}
        url = (base_url or configured.base_url).strip()
        settings = ServerSettings(url, resolve_api_key(api_key, url, configured.base_url), configured.model,
                                  timeout_s=configured.timeout_s)
        try:
            return {"backend": SERVER, "base_url": url, "models": list_models(settings)}
        except TranslationError as exc:
            return error_response(exc)

    @router.post("/translate")
    def translate_route(req: TranslateRequest) -> Any:
        configured = config_from_opts(context.get_opts())
        config = _config(req, configured)
        try:
            if req.verify_inputs is not None:
                allowed, reason = run_allowed(context.args())
                if not allowed:
                    raise VerifyRefused(reason)
                if req.stream:
                    raise InvalidTranslationRequest("Verify mode answers with JSON: send \"stream\": false.",
                                                    "Repairs replace the translation, which a text stream cannot.")
            api_key = resolve_api_key(req.api_key, config.base_url, configured.base_url)
            backend = make_backend(req.backend, config, api_key, context.models_dir())
        except TranslationError as exc:
            return error_response(exc)
        job = TranslationJob(req.input_language, req.output_language, req.code, config.chunk_tokens,
                             req.verify_inputs, req.repair_rounds, config.run_timeout_s)
        cancel = threading.Event()
        updates = translate(job, backend, cancel)
        if not req.stream:
            last = None
            for last in updates:  # noqa: B007 (only the final update is answered)
                pass
            assert last is not None
            return _json_result(last)
        first: list[Update] = []
        for update in updates:  # wait for the first output, so early failures still get a proper status
            first.append(update)
            if update.output or update.done:
                break
        if first and first[-1].done and first[-1].error is not None and not first[-1].output:
            return error_response(first[-1].error, "", first[-1].status)
        return StreamingResponse(_text_stream(first, updates, cancel), media_type="text/plain; charset=utf-8")

    app.include_router(router)
