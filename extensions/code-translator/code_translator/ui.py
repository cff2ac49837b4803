"""The "Code translator" tab: two code editors, language pickers with detection, backend fields, Translate/Stop,
streamed output with copy and download, and verify-by-running with repair rounds.

The event handlers are plain methods of :class:`TabHandlers` (tested without a browser); :func:`build_tab` only
lays out components and wires them.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from code_translator.detect import detect_language
from code_translator.errors import TranslationError, VerifyRefused, describe
from code_translator.languages import LANGUAGES, file_extension, highlight_mode
from code_translator.local_backend import local_model_names
from code_translator.server_backend import ServerSettings, list_models
from code_translator.settings import (
    BACKEND_LABELS,
    LOCAL,
    SERVER,
    HostContext,
    TranslatorConfig,
    config_from_opts,
    make_backend,
    resolve_api_key,
    run_allowed,
)
from code_translator.translator import MAX_REPAIR_ROUNDS, TranslationJob, translate

log = logging.getLogger(__name__)

UPLOAD_LIMIT_BYTES = 2 * 1024 * 1024
UI_UPDATE_INTERVAL_S = 0.05
_LABEL_TO_BACKEND = {label: kind for kind, label in BACKEND_LABELS.items()}

# (output code, status, source run output, translation run output, diff, download file)
TabOutputs = tuple[str, str, str, str, str, str | None]


class TabHandlers:
    """What the tab's buttons do."""

    def __init__(self, host: HostContext) -> None:
        self.host = host

    def _config(self, base_url: str, model: str) -> tuple[TranslatorConfig, str]:
        """The settings with the tab's base URL and model applied, and the base URL configured in Settings."""
        config = config_from_opts(self.host.get_opts())
        configured_url = config.base_url
        config.base_url = (base_url or configured_url).strip()
        config.model = (model or "").strip() or config.model
        return config, configured_url

    def translate(self, backend_label: str, base_url: str, api_key: str, model: str, input_language: str,
                  output_language: str, code: str, verify_on: bool = False, verify_inputs: str = "",
                  repair_rounds: float = 0) -> Iterator[TabOutputs]:
        """Stream (output, status, source run, translation run, diff, download) while translating."""
        cancel = threading.Event()
        output, report_views = "", ("", "", "")
        try:
            config, configured_url = self._config(base_url, model)
            if verify_on:
                allowed, reason = run_allowed(self.host.args())
                if not allowed:
                    raise VerifyRefused(reason)
            key = resolve_api_key(api_key, config.base_url, configured_url)
            backend = make_backend(_LABEL_TO_BACKEND.get(backend_label, SERVER), config, key, self.host.models_dir())
            job = TranslationJob(input_language, output_language, code or "", config.chunk_tokens,
                                 (verify_inputs or "") if verify_on else None, int(repair_rounds or 0),
                                 config.run_timeout_s)
            last_yield = 0.0
            for update in translate(job, backend, cancel):
                output = update.output
                if update.report is not None:
                    report = update.report
                    report_views = (report.source_output(), report.translation_output(), report.diff())
                status = f"Error: {update.status}" if update.error is not None else update.status
                now = time.monotonic()
                if update.done or update.restarted or now - last_yield >= UI_UPDATE_INTERVAL_S:
                    last_yield = now
                    download = _download_file(output, output_language) if update.done and output else None
                    yield (output, status, *report_views, download)
        except TranslationError as exc:
            yield (output, f"Error: {describe(exc)}", *report_views, None)
        except Exception as exc:  # never a bare failure in the page: say what broke, keep the output
            log.exception("Code translator failed")
            yield (output, f"Error: unexpected {type(exc).__name__}: {exc} (see the server log).", *report_views,
                   None)
        finally:
            cancel.set()  # Stop cancels this generator; the backend sees the event and closes its stream

    def upload(self, path: str | None, auto_detect: bool, current_language: str) -> tuple[str, str, str]:
        """(input code, input language, status) from an uploaded file."""
        if not path:
            return "", current_language, ""
        file = Path(path)
        size = file.stat().st_size
        if size > UPLOAD_LIMIT_BYTES:
            return "", current_language, f"Error: {file.name} is {size // 1024} KiB; the limit is " \
                                         f"{UPLOAD_LIMIT_BYTES // 1024 // 1024} MiB."
        code = file.read_bytes().decode("utf-8", errors="replace")
        detected = detect_language(code, file.name) if auto_detect else None
        language = detected or current_language
        note = f" (detected {detected})" if detected else ""
        return code, language, f"Loaded {file.name}{note}."

    def detect(self, code: str, auto_detect: bool, current_language: str) -> str:
        """The input language after an edit: the detected one when detection is on and sure, else unchanged."""
        if not auto_detect:
            return current_language
        return detect_language(code or "") or current_language

    def models(self, backend_label: str, base_url: str, api_key: str) -> tuple[list[str], str]:
        """(model choices, status) for the model picker."""
        if _LABEL_TO_BACKEND.get(backend_label) == LOCAL:
            folder = self.host.models_dir()
            names = local_model_names(folder) if folder else []
            where = folder / "code-translator" if folder else "models/code-translator"
            return names, f"{len(names)} local model(s) in {where}." if names else f"No models in {where}."
        config, configured_url = self._config(base_url, "")
        settings = ServerSettings(config.base_url, resolve_api_key(api_key, config.base_url, configured_url),
                                  timeout_s=config.timeout_s)
        try:
            names = list_models(settings)
        except TranslationError as exc:
            return [], f"Error: {describe(exc)}"
        return names, f"{config.base_url} offers {len(names)} model(s)."


def _download_file(text: str, language: str) -> str:
    folder = Path(tempfile.mkdtemp(prefix="code-translator-"))
    path = folder / f"translation.{file_extension(language)}"
    path.write_text(text, encoding="utf-8")
    return str(path)


def build_tab(host: HostContext) -> Any:
    """The tab's ``gr.Blocks``."""
    import gradio as gr

    handlers = TabHandlers(host)
    config = config_from_opts(host.get_opts())
    with gr.Blocks(analytics_enabled=False) as tab:
        with gr.Row():
            backend = gr.Radio(list(BACKEND_LABELS.values()), value=BACKEND_LABELS[SERVER], label="Backend",
                               elem_id="code_translator_backend")
            base_url = gr.Textbox(config.base_url, label="Server base URL", elem_id="code_translator_base_url")
            api_key = gr.Textbox("", label="API key", type="password", elem_id="code_translator_api_key",
                                 placeholder="empty: OPENAI_API_KEY, sent only to the configured server or OpenAI")
            with gr.Column(min_width=220):
                model = gr.Dropdown([config.model] if config.model else [], value=config.model or None,
                                    label="Model", allow_custom_value=True, elem_id="code_translator_model")
                list_button = gr.Button("List models", size="sm", elem_id="code_translator_list_models")
        with gr.Row():
            translate_button = gr.Button("Translate", variant="primary", elem_id="code_translator_translate")
            stop_button = gr.Button("Stop", elem_id="code_translator_stop")
        status = gr.Textbox("", label="Status", interactive=False, elem_id="code_translator_status")
        with gr.Row(equal_height=False):
            with gr.Column():
                with gr.Row():
                    input_language = gr.Dropdown(LANGUAGES, value="JavaScript", label="Input language",
                                                 elem_id="code_translator_input_language")
                    auto_detect = gr.Checkbox(True, label="Detect from file or content",
                                              elem_id="code_translator_auto_detect")
                input_code = gr.Code("", language=highlight_mode("JavaScript"), label="Input", lines=20,
                                     interactive=True, elem_id="code_translator_input")
                upload = gr.File(label="Open a file", type="filepath", elem_id="code_translator_upload")
            with gr.Column():
                output_language = gr.Dropdown(LANGUAGES, value="Python", label="Output language",
                                              elem_id="code_translator_output_language")
                output_code = gr.Code("", language=highlight_mode("Python"), label="Output", lines=20,
                                      interactive=False, buttons=["copy", "download"],
                                      elem_id="code_translator_output")
                download = gr.DownloadButton("Download translation", value=None, elem_id="code_translator_download")
        with gr.Accordion("Verify by running", open=False):
            gr.Markdown("Runs the input and the translation on the same stdin and compares their output "
                        "(Python, JavaScript with node, Bash, C/C++ with gcc). Separate input cases with a line "
                        "`---`. Programs run on this machine with a time limit.")
            with gr.Row():
                verify_on = gr.Checkbox(False, label="Verify after translating", elem_id="code_translator_verify")
                repair_rounds = gr.Slider(0, MAX_REPAIR_ROUNDS, value=1, step=1, label="Repair rounds",
                                          elem_id="code_translator_repair_rounds")
            verify_inputs = gr.Textbox("", label="Inputs (stdin)", lines=4, elem_id="code_translator_verify_inputs")
            with gr.Row():
                source_run = gr.Textbox("", label="Input program's output", lines=6, interactive=False)
                translation_run = gr.Textbox("", label="Translation's output", lines=6, interactive=False)
            diff = gr.Textbox("", label="Difference", lines=6, interactive=False, elem_id="code_translator_diff")

        event = translate_button.click(
            handlers.translate,
            inputs=[backend, base_url, api_key, model, input_language, output_language, input_code, verify_on,
                    verify_inputs, repair_rounds],
            outputs=[output_code, status, source_run, translation_run, diff, download])
        stop_button.click(None, cancels=[event])
        input_language.change(lambda lang: gr.update(language=highlight_mode(lang)), input_language, input_code)
        input_language.input(lambda: False, None, auto_detect)  # a choice by hand turns detection off
        output_language.change(lambda lang: gr.update(language=highlight_mode(lang)), output_language, output_code)
        input_code.input(handlers.detect, [input_code, auto_detect, input_language], input_language)
        upload.upload(handlers.upload, [upload, auto_detect, input_language], [input_code, input_language, status])
        list_button.click(lambda *a: _model_choices(gr, handlers.models(*a)), [backend, base_url, api_key],
                          [model, status])
    return tab


def _model_choices(gr: Any, found: tuple[list[str], str]) -> tuple[Any, str]:
    names, status = found
    return gr.update(choices=names, value=names[0] if names else None), status
