"""The "T2I-Adapter" accordion of txt2img and img2img: one tab per unit with its picture, preprocessor (and that
preprocessor's sliders), adapter model (with a refresh button), weight, guidance window, resize mode, and a
preview of the preprocessed map.

:func:`build_units_ui` returns the controls whose values become the script's arguments, in
:data:`~t2i_adapter.units.UI_FIELDS` order per unit, and the paste fields that fill them from an infotext.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from modules.errors import AtelierError
from modules.ui_components import ToolButton

from .infotext import infotext_key, units_from_params
from .ui_catalog import NONE, AdapterCatalog
from .ui_conditions import NO_PREPROCESSOR, RESIZE_MODES, list_modules, run_map, threshold_specs
from .units import UI_FIELDS

REFRESH = "\U0001f504"
DEFAULT_THRESHOLD = {"minimum": 0, "maximum": 255, "value": 0, "step": 1}


@dataclass
class UnitControls:
    """The components of one unit's tab; ``inputs()`` are the script arguments, in ``UI_FIELDS`` order."""

    enabled: Any
    image: Any
    module: Any
    model: Any
    weight: Any
    guidance_start: Any
    guidance_end: Any
    resize_mode: Any
    processor_res: Any
    threshold_a: Any
    threshold_b: Any
    preview: Any
    preview_button: Any
    refresh: Any

    def inputs(self) -> list[Any]:
        return [getattr(self, name) for name in UI_FIELDS]


def _label(key: str) -> str:
    return key.replace("_", " ").capitalize()


def slider_updates(module: str, *, reset_values: bool) -> list[Any]:
    """Updates of (processor_res, threshold_a, threshold_b) for a preprocessor: shown, labelled and ranged as it
    needs. Values are set to its defaults only when the user picked it (``reset_values``), so a pasted infotext's
    values survive the change event the paste itself causes."""
    uses_preprocessor = module != NO_PREPROCESSOR
    res = {"visible": uses_preprocessor}
    if reset_values:
        res["value"] = 512
    updates = [gr.update(**res)]
    specs = threshold_specs(module)
    for i in range(2):
        if i >= len(specs):
            updates.append(gr.update(visible=False))
            continue
        key, spec = specs[i]
        minimum, maximum = spec.get("min", 0), spec.get("max", 255)
        step = spec.get("step") or (1 if all(float(v).is_integer() for v in (minimum, maximum)) else 0.01)
        update = {"visible": True, "label": spec.get("label") or _label(key), "minimum": minimum, "maximum": maximum,
                  "step": step}
        if reset_values:
            update["value"] = spec.get("value", minimum)
        updates.append(gr.update(**update))
    return updates


def preview_map(image: Any, module: str, processor_res: float, threshold_a: float, threshold_b: float) -> Any:
    """The preprocessed map the adapter would be given (before fitting it to the picture size)."""
    if image is None:
        raise gr.Error("Upload a condition picture first.")
    try:
        return run_map(module or NO_PREPROCESSOR, image, int(processor_res or 512), threshold_a, threshold_b)
    except AtelierError as e:
        raise gr.Error(f"{e.message} {e.hint}".strip()) from e


def _build_unit(script: Any, index: int, modules: list[str], model_names: list[str]) -> UnitControls:
    def eid(name: str) -> str:
        return script.elem_id(f"unit{index}_{name}")

    enabled = gr.Checkbox(label="Enable", value=False, elem_id=eid("enabled"))
    with gr.Row():
        image = gr.Image(label="Condition picture", type="numpy", image_mode="RGB", sources=["upload", "clipboard"],
                         elem_id=eid("image"), height=256)
        preview = gr.Image(label="Preprocessed map", interactive=False, elem_id=eid("preview"), height=256,
                           format="png")
    with gr.Row():
        module = gr.Dropdown(label="Preprocessor", choices=modules, value=NO_PREPROCESSOR, elem_id=eid("module"))
        model = gr.Dropdown(label="Adapter model", choices=[NONE, *model_names], value=NONE, elem_id=eid("model"))
        refresh = ToolButton(REFRESH, elem_id=eid("refresh"), tooltip="Look for new files in models/T2I-Adapter.")
        preview_button = gr.Button("Preview map", elem_id=eid("preview_button"), scale=0, min_width=120)
    weight = gr.Slider(label="Weight", minimum=0.0, maximum=2.0, step=0.05, value=1.0, elem_id=eid("weight"))
    with gr.Row():
        start = gr.Slider(label="Guidance start", minimum=0.0, maximum=1.0, step=0.01, value=0.0,
                          elem_id=eid("guidance_start"))
        end = gr.Slider(label="Guidance end", minimum=0.0, maximum=1.0, step=0.01, value=1.0,
                        elem_id=eid("guidance_end"))
    resize_mode = gr.Radio(label="Resize mode", choices=list(RESIZE_MODES), value=RESIZE_MODES[1],
                           elem_id=eid("resize_mode"))
    with gr.Row():
        processor_res = gr.Slider(label="Preprocessor resolution", minimum=64, maximum=2048, step=8, value=512,
                                  visible=False, elem_id=eid("processor_res"))
        threshold_a = gr.Slider(label="Threshold A", visible=False, elem_id=eid("threshold_a"), **DEFAULT_THRESHOLD)
        threshold_b = gr.Slider(label="Threshold B", visible=False, elem_id=eid("threshold_b"), **DEFAULT_THRESHOLD)
    return UnitControls(enabled, image, module, model, weight, start, end, resize_mode, processor_res, threshold_a,
                        threshold_b, preview, preview_button, refresh)


def _connect(unit: UnitControls, catalog: Callable[[], AdapterCatalog]) -> None:
    sliders = [unit.processor_res, unit.threshold_a, unit.threshold_b]
    unit.module.change(lambda m: slider_updates(m, reset_values=False), inputs=[unit.module], outputs=sliders,
                       show_progress="hidden", queue=False, api_visibility="private")
    unit.module.input(lambda m: slider_updates(m, reset_values=True), inputs=[unit.module], outputs=sliders,
                      show_progress="hidden", queue=False, api_visibility="private")
    unit.preview_button.click(preview_map, inputs=[unit.image, unit.module, *sliders], outputs=[unit.preview],
                              show_progress="minimal", api_visibility="private")
    unit.refresh.click(lambda: gr.update(choices=[NONE, *catalog().unit_names()]), outputs=[unit.model],
                       show_progress="hidden", api_visibility="private")
    unit.image.upload(lambda: True, outputs=[unit.enabled], show_progress="hidden", queue=False,
                      api_visibility="private")


def _paste_fields(unit: UnitControls, index: int, catalog: Callable[[], AdapterCatalog]) -> list[tuple[Any, Any]]:
    """Infotext -> this unit's controls; an infotext without the unit's entry disables it."""

    def value(name: str) -> Callable[[dict[str, Any]], Any]:
        return lambda params: units_from_params(params).get(index, {}).get(name)

    def model(params: dict[str, Any]) -> Any:
        text = units_from_params(params).get(index, {}).get("model")
        if text is None:
            return None
        found = catalog().find(text)
        if found is None:
            gr.Warning(f"T2I-Adapter unit {index}: the adapter {text} is not in models/T2I-Adapter.")
        return found

    fields: list[tuple[Any, Any]] = [(unit.enabled, lambda params: infotext_key(index) in params),
                                     (unit.model, model)]
    for name in ("module", "weight", "guidance_start", "guidance_end", "resize_mode", "processor_res",
                 "threshold_a", "threshold_b"):
        fields.append((getattr(unit, name), value(name)))
    return fields


def build_units_ui(script: Any, n_units: int, catalog: Callable[[], AdapterCatalog]) -> tuple[list[Any], list]:
    """The accordion (call inside the script's ``ui``); returns (script inputs, infotext paste fields)."""
    modules = list_modules()
    names = catalog().unit_names()
    inputs: list[Any] = []
    paste: list[tuple[Any, Any]] = []
    with (gr.Accordion("T2I-Adapter", open=False, elem_id=script.elem_id("accordion")),
          gr.Tabs(elem_id=script.elem_id("units"))):
        for index in range(n_units):
            with gr.Tab(f"Unit {index}", elem_id=script.elem_id(f"unit{index}_tab")):
                unit = _build_unit(script, index, modules, names)
            _connect(unit, catalog)
            inputs += unit.inputs()
            paste += _paste_fields(unit, index, catalog)
    return inputs, paste
