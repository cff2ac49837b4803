"""The "Preprocessors" tab: a picture in, a preprocessor and its knobs, Run, the map out (or a visible error).

Every preprocessor's knobs are built once, each set in its own group shown only while that preprocessor is chosen,
so element ids are stable (``pre_<module>_<param>``) and the Run handler knows which values belong to which module.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from typing import Any

import gradio as gr
import numpy as np

from modules.errors import AtelierError
from modules.ui_common import error_html

from .api import list_preprocessors, preprocessor_info
from .imaging import MAX_RESOLUTION, MIN_RESOLUTION

log = logging.getLogger(__name__)

DEFAULT_MODULE = "canny"
Runner = Callable[[str, np.ndarray, int, dict[str, Any]], np.ndarray]


def status_html(info: dict[str, Any]) -> str:
    """The chosen preprocessor's description, and why it cannot run when it cannot."""
    text = f"<p class='pre-description'>{html.escape(info['description'])}</p>"
    if not info["available"]:
        text += f"<p class='pre-unavailable' style='color: var(--error-text-color, #c00)'>Not available: " \
                f"{html.escape(info['reason'] or '')}</p>"
    return f"<div class='pre-status'>{text}</div>"


def knob(spec: dict[str, Any], elem_id: str) -> Any:
    """The Gradio component for one parameter spec."""
    if spec["type"] == "checkbox":
        return gr.Checkbox(label=spec["label"], value=spec["value"], elem_id=elem_id)
    if spec["type"] == "text":
        return gr.Textbox(label=spec["label"], value=spec["value"], lines=3, elem_id=elem_id)
    if spec["type"] == "number":
        return gr.Number(label=spec["label"], value=spec["value"], minimum=spec["min"], maximum=spec["max"],
                         precision=0, elem_id=elem_id)
    return gr.Slider(label=spec["label"], value=spec["value"], minimum=spec["min"], maximum=spec["max"],
                     step=spec["step"], elem_id=elem_id)


def run_clicked(run: Runner, keys: list[tuple[str, str]], image: np.ndarray | None, module: str, resolution: float,
                *values: Any) -> tuple[np.ndarray | None, str]:
    """The Run button: (map, message); a missing picture or any failure is a visible message, never a traceback."""
    try:
        if image is None:
            raise AtelierError("No picture to preprocess.", "Upload or paste a picture first.")
        params = {param: value for (owner, param), value in zip(keys, values, strict=True) if owner == module}
        result = run(module, image, int(resolution), params)
    except AtelierError as e:
        return None, error_html(e)
    except Exception as e:  # a detector's own failure: say which, keep the traceback for the log
        log.exception("Preprocessor %s failed", module)
        return None, error_html(RuntimeError(f"The {module} preprocessor failed: {type(e).__name__}: {e}"))
    h, w = result.shape[:2]
    return result, f"<p class='pre-done'>{html.escape(module)}: {w}x{h} map.</p>"


def create_tab(run: Runner, info: Callable[[str], dict[str, Any]] = preprocessor_info) -> gr.Blocks:
    """The tab's Blocks; ``run(module, image, resolution, params)`` makes a map, ``info(module)`` describes one."""
    names = list_preprocessors()
    infos = {name: info(name) for name in names}
    groups: dict[str, Any] = {}
    keys: list[tuple[str, str]] = []
    components: list[Any] = []
    with gr.Blocks(analytics_enabled=False) as tab:
        with gr.Row(equal_height=False):
            with gr.Column(variant="panel"):
                image = gr.Image(label="Image", type="numpy", image_mode=None, sources=["upload", "clipboard"],
                                 elem_id="pre_image")
                module = gr.Dropdown(label="Preprocessor", choices=[(infos[n]["label"], n) for n in names],
                                     value=DEFAULT_MODULE, elem_id="pre_module")
                status = gr.HTML(status_html(infos[DEFAULT_MODULE]), elem_id="pre_status")
                resolution = gr.Slider(label="Resolution", minimum=MIN_RESOLUTION, maximum=MAX_RESOLUTION, step=64,
                                       value=512, elem_id="pre_resolution")
                for name in names:
                    if not infos[name]["params"]:
                        continue
                    with gr.Group(visible=name == DEFAULT_MODULE, elem_id=f"pre_params_{name}") as group:
                        for param, spec in infos[name]["params"].items():
                            components.append(knob(spec, f"pre_{name}_{param}"))
                            keys.append((name, param))
                    groups[name] = group
                run_button = gr.Button("Run", variant="primary", elem_id="pre_run")
            with gr.Column(variant="panel"):
                output = gr.Image(label="Map", type="numpy", format="png", interactive=False, elem_id="pre_output")
                message = gr.HTML(elem_id="pre_message")

        def module_changed(name: str) -> list[Any]:
            return [status_html(info(name)), *(gr.update(visible=owner == name) for owner in groups)]

        def clicked(*args: Any) -> tuple[np.ndarray | None, str]:
            return run_clicked(run, keys, *args)

        module.change(module_changed, inputs=[module], outputs=[status, *groups.values()], show_progress="hidden",
                      api_visibility="private")
        run_button.click(clicked, inputs=[image, module, resolution, *components], outputs=[output, message],
                         api_visibility="private")
    return tab
