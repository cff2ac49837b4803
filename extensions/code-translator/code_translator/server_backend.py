"""Stream a chat completion from any OpenAI-compatible server (llama.cpp, Ollama's /v1, vLLM, OpenAI) through the
official ``openai`` client, and turn every failure into an error that says what went wrong.

The stream is read defensively: chunks without content (the role-only first chunk, the finish chunk), a usage
chunk with an empty ``choices`` list and a stream that ends without ``[DONE]`` are all normal.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from code_translator.errors import (
    AuthenticationFailed,
    ContextLengthExceeded,
    InvalidTranslationRequest,
    ServerRejected,
    ServerTimeout,
    ServerUnreachable,
    StreamInterrupted,
    TranslationError,
    UnknownModel,
)

DEFAULT_BASE_URL = "http://127.0.0.1:8080/v1"
PLACEHOLDER_KEY = "no-key"  # the client insists on a key; local servers ignore it
CONTEXT_WORDS = re.compile(r"context length|context size|context window|maximum context|too many tokens|"
                           r"exceeds? the (available )?context|context_length_exceeded|prompt is too long", re.I)
SERVER_HINT = ("Start the server (llama.cpp's llama-server, `ollama serve`, `vllm serve`) or correct the base URL "
               "in Settings → Code translator; it usually ends in /v1.")


@dataclass
class ServerSettings:
    base_url: str = DEFAULT_BASE_URL
    api_key: str = ""
    model: str = ""
    temperature: float = 0.0
    max_tokens: int = 0  # 0: leave it to the server
    timeout_s: float = 120.0


def _openai() -> Any:
    """The ``openai`` package, or an error that says how to install it."""
    try:
        import openai
    except ImportError as exc:
        raise TranslationError("The code translator needs the openai package, which is not installed.",
                               "Install Atelier's requirements (pip install -r requirements.txt).") from exc
    return openai


def _client(settings: ServerSettings) -> Any:
    return _openai().OpenAI(base_url=settings.base_url, api_key=settings.api_key or PLACEHOLDER_KEY,
                  timeout=settings.timeout_s, max_retries=0)


def _server_message(exc: Any, secret: str) -> str:
    """The server's own words from an error body, with the API key blotted out should it be quoted."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        text = inner.get("message") if isinstance(inner, dict) else inner
    else:
        text = body
    text = str(text or getattr(exc, "message", "") or exc).strip()
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
    return text


def list_models(settings: ServerSettings) -> list[str]:
    """The model ids the server offers (``GET /models``); raises a :class:`TranslationError` when it cannot say."""
    openai = _openai()
    try:
        return sorted(model.id for model in _client(settings).models.list())
    except openai.APIError as exc:
        raise classify(exc, settings, settings.model, received=0, can_list=False) from exc


def classify(exc: Exception, settings: ServerSettings, model: str, received: int,
             can_list: bool = True) -> TranslationError:
    """The specific error for an ``openai`` exception; ``received`` is how many characters had arrived."""
    if isinstance(exc, TranslationError):
        return exc
    openai = _openai()
    url = settings.base_url
    kept = f" The {received} characters received so far are kept." if received else ""
    if isinstance(exc, openai.APITimeoutError):
        where = "stopped sending output" if received else "did not answer"
        return ServerTimeout(f"The server at {url} {where} within {settings.timeout_s:g} s.{kept}",
                             "Raise the timeout in Settings → Code translator, or use a smaller model or input.")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        if received:
            return StreamInterrupted(f"The connection to {url} broke in the middle of the reply.{kept}",
                                     "Check the server's log (a crash or running out of memory?), then try again.")
        reason = f" ({cause})" if cause else ""
        return ServerUnreachable(f"Cannot reach the server at {url}{reason}.", SERVER_HINT)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        said = _server_message(exc, settings.api_key)
        if status in (401, 403):
            return AuthenticationFailed(f"The server at {url} rejected the API key (HTTP {status}: {said}).",
                                        "Enter a valid key in the tab's API key field, or set OPENAI_API_KEY before "
                                        "starting Atelier. Local servers need one only when started with --api-key.")
        if CONTEXT_WORDS.search(said) or status == 413:
            return ContextLengthExceeded(
                f"The input does not fit in the model's context (HTTP {status}: {said}).{kept}",
                "Lower 'Chunk size (tokens)' so long files are split into smaller parts, lower 'Max tokens', or give "
                "the server a larger context (llama.cpp -c, OLLAMA_CONTEXT_LENGTH, vLLM --max-model-len).")
        if status == 404:
            return _not_found(settings, model, said, can_list)
        return ServerRejected(f"The server at {url} answered HTTP {status}: {said}.{kept}",
                              "See the server's log for details.")
    return StreamInterrupted(f"The reply from {url} could not be read ({type(exc).__name__}: {exc}).{kept}",
                             "The server may not be OpenAI-compatible; check its base URL.")


def _not_found(settings: ServerSettings, model: str, said: str, can_list: bool) -> TranslationError:
    available: list[str] | None = None
    if can_list:
        try:
            available = list_models(settings)
        except TranslationError:
            available = None
    if available is None:
        return UnknownModel(f"The server at {settings.base_url} answered 404 Not Found ({said}).",
                            "Check the model name and that the base URL points at the OpenAI-compatible API "
                            "(usually ending in /v1).")
    if model in available:
        return ServerRejected(f"The server at {settings.base_url} answered 404 for model '{model}': {said}",
                              "See the server's log for details.")
    offered = ", ".join(available) if available else "none"
    return UnknownModel(f"The server does not know the model '{model}'. It offers: {offered}.",
                        "Pick one of those in the Model field (Ollama: `ollama pull <name>` first).", available)


class ServerBackend:
    """One server and its settings; ``stream(messages)`` yields the reply's text pieces as they arrive.

    After a stream ends, ``finish_reason`` holds the server's reason ("stop", "length", ...) when it sent one.
    """

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.finish_reason: str | None = None

    def describe(self) -> str:
        return f"{self.settings.model or 'default model'} at {self.settings.base_url}"

    def resolve_model(self) -> str:
        if self.settings.model:
            return self.settings.model
        models = list_models(self.settings)
        if not models:
            raise InvalidTranslationRequest(f"No model name was given and the server at {self.settings.base_url} "
                                            "lists none.", "Enter a model name in the Model field.")
        return models[0]

    def stream(self, messages: list[dict[str, str]], cancel: threading.Event | None = None) -> Iterator[str]:
        openai = _openai()
        model = self.resolve_model()
        self.finish_reason = None
        request: dict[str, Any] = {"model": model, "messages": messages, "temperature": self.settings.temperature,
                                   "stream": True}
        if self.settings.max_tokens > 0:
            request["max_tokens"] = self.settings.max_tokens
        try:
            stream = _client(self.settings).chat.completions.create(**request)
        except openai.APIError as exc:
            raise classify(exc, self.settings, model, received=0) from exc
        received = 0
        try:
            for chunk in stream:
                for choice in chunk.choices or ():  # the usage chunk has an empty list
                    if choice.finish_reason:
                        self.finish_reason = choice.finish_reason
                    text = choice.delta.content if choice.delta is not None else None
                    if text and choice.index in (0, None):
                        received += len(text)
                        yield text
                if cancel is not None and cancel.is_set():
                    return
        except Exception as exc:
            raise classify(exc, self.settings, model, received=received) from exc
        finally:
            stream.close()
