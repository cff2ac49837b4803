"""The translator's settings (Settings → Code translator), the API key rule and the choice of backend.

The API key is never a setting: settings are shown in the page and returned by ``/sdapi/v1/options``. It comes from
the tab's password field or the request, else from ``OPENAI_API_KEY`` — and that environment key is only sent to
the base URL configured in Settings or to OpenAI itself, never to a URL that a request or the tab supplied.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from code_translator.errors import InvalidTranslationRequest
from code_translator.local_backend import LocalBackend, resolve_model_dir
from code_translator.server_backend import DEFAULT_BASE_URL, ServerBackend, ServerSettings

SECTION = ("code_translator", "Code translator")
OPENAI_BASE_URL = "https://api.openai.com/v1"
SERVER, LOCAL = "server", "local"
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}
BACKEND_LABELS = {SERVER: "OpenAI-compatible server", LOCAL: "Local transformers model"}

# key -> (default, label)
OPTION_DEFAULTS: dict[str, tuple[Any, str]] = {
    "code_translator_base_url": (DEFAULT_BASE_URL, "Server base URL (llama.cpp http://127.0.0.1:8080/v1, Ollama "
                                                   "http://localhost:11434/v1, vLLM http://localhost:8000/v1, OpenAI "
                                                   f"{OPENAI_BASE_URL})"),
    "code_translator_model": ("", "Model name (empty: the first model the server lists)"),
    "code_translator_temperature": (0.0, "Temperature"),
    "code_translator_max_tokens": (0, "Max tokens per reply (0: the server's default)"),
    "code_translator_timeout": (120.0, "Server timeout in seconds"),
    "code_translator_chunk_tokens": (1500, "Chunk size (tokens): longer inputs are split along definitions"),
    "code_translator_run_timeout": (10.0, "Verify: time limit per program run, in seconds"),
}


@dataclass
class HostContext:
    """Where the tab and the routes read the settings, the models folder and the server's flags, at call time
    (settings change while the server runs)."""

    get_opts: Callable[[], Any]
    models_dir: Callable[[], Path | None]
    args: Callable[[], Any]

    @classmethod
    def from_shared(cls) -> HostContext:
        """Atelier's own: ``modules.shared`` (filled at start-up)."""
        from modules import shared

        return cls(lambda: shared.opts, lambda: getattr(shared.paths, "models_dir", None),
                   lambda: shared.cmd_opts)


@dataclass
class TranslatorConfig:
    base_url: str = DEFAULT_BASE_URL
    model: str = ""
    temperature: float = 0.0
    max_tokens: int = 0
    timeout_s: float = 120.0
    chunk_tokens: int = 1500
    run_timeout_s: float = 10.0


def register_options(opts: Any) -> None:
    """Declare the settings (called from ``on_ui_settings``)."""
    from modules.options import OptionInfo

    for key, (default, label) in OPTION_DEFAULTS.items():
        opts.add_option(key, OptionInfo(default, label, section=SECTION))


def config_from_opts(opts: Any) -> TranslatorConfig:
    """The current settings; defaults where ``opts`` is missing (command line, tests) or lacks a key."""
    def get(key: str) -> Any:
        default = OPTION_DEFAULTS[key][0]
        data = getattr(opts, "data", None)
        return data.get(key, default) if isinstance(data, dict) else default

    return TranslatorConfig(
        base_url=str(get("code_translator_base_url") or DEFAULT_BASE_URL).strip(),
        model=str(get("code_translator_model") or "").strip(),
        temperature=float(get("code_translator_temperature")),
        max_tokens=int(get("code_translator_max_tokens")),
        timeout_s=float(get("code_translator_timeout")),
        chunk_tokens=int(get("code_translator_chunk_tokens")),
        run_timeout_s=float(get("code_translator_run_timeout")),
    )


def _same_url(a: str, b: str) -> bool:
    return a.strip().rstrip("/").lower() == b.strip().rstrip("/").lower()


def resolve_api_key(explicit: str | None, base_url: str, configured_base_url: str,
                    environ: Mapping[str, str] = os.environ) -> str:
    """The key to send: the one given, else ``OPENAI_API_KEY`` for the configured server or OpenAI, else none."""
    if explicit and explicit.strip():
        return explicit.strip()
    if _same_url(base_url, configured_base_url) or _same_url(base_url, OPENAI_BASE_URL):
        return environ.get("OPENAI_API_KEY", "").strip()
    return ""


def make_backend(kind: str, config: TranslatorConfig, api_key: str, models_dir: Path | None) -> Any:
    """A :class:`ServerBackend` or :class:`LocalBackend` for ``kind`` ("server" or "local")."""
    if kind == LOCAL:
        if models_dir is None:
            raise InvalidTranslationRequest("The local backend needs a models folder.")
        return LocalBackend(resolve_model_dir(models_dir, config.model), config.max_tokens, config.temperature)
    if kind != SERVER:
        raise InvalidTranslationRequest(f"Unknown backend '{kind}'.", f"Use '{SERVER}' or '{LOCAL}'.")
    if not config.base_url.startswith(("http://", "https://")):
        raise InvalidTranslationRequest(f"The base URL '{config.base_url}' is not an http(s) URL.",
                                        f"For example {DEFAULT_BASE_URL}.")
    return ServerBackend(ServerSettings(config.base_url, api_key, config.model, config.temperature,
                                        config.max_tokens, config.timeout_s))


def run_allowed(args: Any) -> tuple[bool, str]:
    """Whether verify mode may run code here: not when the server listens beyond this machine, unless allowed."""
    if args is None or getattr(args, "enable_insecure_extension_access", False):
        return True, ""
    exposed_by = [flag for flag, on in (("--listen", getattr(args, "listen", False)),
                                        ("--share", getattr(args, "share", False))) if on]
    server_name = getattr(args, "server_name", None)
    if server_name and server_name.strip("[]").lower() not in LOOPBACK_NAMES:
        exposed_by.append(f"--server-name {server_name}")
    if not exposed_by:
        return True, ""
    return False, (f"Verify runs programs on the server, which is refused because it listens beyond this machine "
                   f"({', '.join(exposed_by)}); restart with --enable-insecure-extension-access to allow it.")
