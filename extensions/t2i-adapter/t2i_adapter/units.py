"""T2I-Adapter units: what one adapter slot of a generation asks for, read from the UI's controls or an API object.

A unit names an adapter file in ``models/T2I-Adapter``, a condition picture and the preprocessor that turns it into
the adapter's map, a weight, the fraction of the sampling steps it acts on (``guidance_start``..``guidance_end``,
sd-webui-controlnet's names) and how the map is fitted to the picture size.

The script's arguments come in two shapes:

* from the UI: every unit's controls in :data:`UI_FIELDS` order, one unit after another;
* from the API (``alwayson_scripts: {"T2I-Adapter": {"args": [{...}, {...}]}}``): one object per unit. Only
  objects are accepted there; positional values in UI order are refused with a message saying so.

Everything a user can get wrong is checked once, here, and reported as an :class:`InvalidRequest` naming the unit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modules.errors import InvalidRequest

from .ui_catalog import NONE, AdapterCatalog, is_fuser
from .ui_conditions import NO_PREPROCESSOR, RESIZE_MODES, as_rgb_array, list_modules, run_map

UI_FIELDS = ("enabled", "image", "module", "model", "weight", "guidance_start", "guidance_end", "resize_mode",
             "processor_res", "threshold_a", "threshold_b")
API_ALIASES = {"input_image": "image"}
# sd-webui-controlnet unit keys that have no meaning for an adapter; accepted so its clients work, then ignored.
IGNORED_API_KEYS = frozenset({"low_vram", "lowvram", "pixel_perfect", "control_mode", "guess_mode", "guessmode",
                              "mask", "hr_option", "save_detected_map", "is_ui", "advanced_weighting"})
RESIZE_ALIASES = {
    "0": RESIZE_MODES[0], "just resize": RESIZE_MODES[0], "resize": RESIZE_MODES[0],
    "1": RESIZE_MODES[1], "crop and resize": RESIZE_MODES[1], "inner fit (scale to fit)": RESIZE_MODES[1],
    "2": RESIZE_MODES[2], "resize and fill": RESIZE_MODES[2], "outer fit (shrink to fit)": RESIZE_MODES[2],
    "envelope (outer fit)": RESIZE_MODES[2],
}
PROCESSOR_RES_RANGE = (64, 4096)
WEIGHT_RANGE = (-10.0, 10.0)


@dataclass
class AdapterUnit:
    """One enabled adapter slot, checked: ``model`` is a catalog name, ``image`` an RGB uint8 array, and
    ``condition_map`` the preprocessed map (made by :func:`prepare_maps`)."""

    index: int
    model: str
    image: np.ndarray
    module: str = NO_PREPROCESSOR
    weight: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    resize_mode: str = RESIZE_MODES[1]
    processor_res: int = 512
    threshold_a: float | None = None
    threshold_b: float | None = None
    condition_map: np.ndarray | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return f"T2I-Adapter unit {self.index}"

    def active_at(self, fraction: float) -> bool:
        """Whether the unit acts at this fraction of the sampling steps (both ends included, like
        sd-webui-controlnet: start 0.5 and end 0.5 with 4 steps act on the third step only)."""
        return self.guidance_start <= fraction + 1e-9 and fraction <= self.guidance_end + 1e-9


def _fail(index: int, message: str, hint: str) -> InvalidRequest:
    return InvalidRequest(f"T2I-Adapter unit {index}: {message}", hint)


def split_script_args(args: Sequence[Any], *, is_api: bool = False) -> list[dict[str, Any]]:
    """The raw unit mappings in the script's argument list (see the module docstring for the two shapes)."""
    objects = [a for a in args if isinstance(a, Mapping)]
    if objects:
        return [{"enabled": True, **dict(o)} for o in objects]
    width = len(UI_FIELDS)
    groups = [dict(zip(UI_FIELDS, args[i: i + width], strict=True)) for i in range(0, len(args) - width + 1, width)]
    if is_api and any(_truthy(g.get("enabled")) for g in groups):
        raise InvalidRequest("T2I-Adapter takes one object per unit, not positional values.",
                             'Send alwayson_scripts: {"T2I-Adapter": {"args": [{"image": "<base64>", '
                             '"module": "canny", "model": "<name>", "weight": 1.0}]}}.')
    return groups


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def _number(raw: Mapping[str, Any], key: str, index: int, default: float, low: float, high: float) -> float:
    value = raw.get(key, default)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or not low <= number <= high:
        raise _fail(index, f"{key} must be a number from {low:g} to {high:g}, got {value!r}.",
                    f"Send {key} as a number, e.g. {default:g}.")
    return number


def _optional_threshold(raw: Mapping[str, Any], key: str, index: int) -> float | None:
    value = raw.get(key)
    if value is None or value == "" or value == -1:  # -1: sd-webui-controlnet's "the preprocessor's default"
        return None
    return _number(raw, key, index, 0.0, -1e6, 1e6)


def resize_mode_name(value: Any, index: int = 0) -> str:
    """A1111/sd-webui-controlnet resize mode (name in any case, or 0/1/2) -> one of :data:`RESIZE_MODES`."""
    if value is None or value == "":
        return RESIZE_MODES[1]
    text = str(int(value)) if isinstance(value, int | float) and not isinstance(value, bool) else str(value)
    found = RESIZE_ALIASES.get(text.strip().lower())
    if found is None:
        raise _fail(index, f"resize_mode {value!r} is not one of {', '.join(RESIZE_MODES)} (or 0, 1, 2).",
                    'Send e.g. "resize_mode": "Crop and resize".')
    return found


def _check_keys(raw: Mapping[str, Any], index: int) -> dict[str, Any]:
    unit = {}
    unknown = []
    for key, value in raw.items():
        name = API_ALIASES.get(key, key)
        if name in UI_FIELDS:
            unit[name] = value
        elif key not in IGNORED_API_KEYS:
            unknown.append(key)
    if unknown:
        raise _fail(index, f"unknown field(s) {', '.join(map(repr, sorted(unknown)))}.",
                    f"A unit object takes {', '.join(UI_FIELDS)}.")
    return unit


def _model_name(value: Any, index: int, catalog: AdapterCatalog) -> str:
    text = "" if value is None else str(value).strip()
    if text in ("", NONE, NONE.lower()):
        raise _fail(index, "no adapter model is chosen.",
                    f"Pick one of the files in {catalog.folder} (the unit's model), or disable the unit.")
    found = catalog.find(text)
    if found is not None and is_fuser(found):
        raise _fail(index, f"{found} is a CoAdapter fuser, not an adapter for a unit.",
                    "Give the units coadapter-* adapters; the fuser in the folder then combines them by itself.")
    if found is None:
        available = ", ".join(catalog.unit_names()) or "none: the folder is empty"
        raise _fail(index, f"adapter model {text!r} was not found in {catalog.folder}. Available: {available}.",
                    "Put the adapter file in models/T2I-Adapter (and press the refresh button in the UI).")
    return found


def _image(value: Any, index: int, decode: Callable[[str, str], Any] | None) -> np.ndarray:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise _fail(index, "no condition picture is given.", "Upload a picture for the unit (API: image as base64).")
    if isinstance(value, str):
        if decode is None:
            raise _fail(index, "the condition picture is text, but pictures can only be decoded in API requests.",
                        "Upload the picture.")
        value = decode(value, f"T2I-Adapter unit {index} image")
    if isinstance(value, Mapping):  # a Gradio image payload ({"image": ..., "mask": ...}) from older clients
        value = value.get("image") or value.get("background")
    return as_rgb_array(value)


def parse_unit(raw: Mapping[str, Any], index: int, catalog: AdapterCatalog, *,
               decode: Callable[[str, str], Any] | None = None, modules: Sequence[str] | None = None,
               ) -> AdapterUnit | None:
    """A checked unit from one raw mapping (UI values or an API object); None when it is disabled."""
    raw = _check_keys(raw, index)
    if not _truthy(raw.get("enabled", False)):
        return None
    module = str(raw.get("module") or NO_PREPROCESSOR)
    modules = list_modules() if modules is None else list(modules)
    if module not in modules:
        raise _fail(index, f"preprocessor {module!r} is not available. Available: {', '.join(modules)}.",
                    'Send "module": "none" when the picture already is the condition map.')
    start = _number(raw, "guidance_start", index, 0.0, 0.0, 1.0)
    end = _number(raw, "guidance_end", index, 1.0, 0.0, 1.0)
    if start > end:
        raise _fail(index, f"guidance_start ({start:g}) is after guidance_end ({end:g}).",
                    "Both are fractions of the sampling steps: 0 is the first step, 1 the last.")
    res = _number(raw, "processor_res", index, 512, *PROCESSOR_RES_RANGE)
    return AdapterUnit(
        index=index, model=_model_name(raw.get("model"), index, catalog), image=_image(raw.get("image"), index, decode),
        module=module, weight=_number(raw, "weight", index, 1.0, *WEIGHT_RANGE), guidance_start=start,
        guidance_end=end, resize_mode=resize_mode_name(raw.get("resize_mode"), index), processor_res=int(res),
        threshold_a=_optional_threshold(raw, "threshold_a", index),
        threshold_b=_optional_threshold(raw, "threshold_b", index),
    )


def parse_units(args: Sequence[Any], catalog: AdapterCatalog, *, is_api: bool = False,
                decode: Callable[[str, str], Any] | None = None) -> list[AdapterUnit]:
    """Every enabled unit of the script's arguments, checked (the first problem raises)."""
    modules = list_modules()
    units = []
    for index, raw in enumerate(split_script_args(args, is_api=is_api)):
        unit = parse_unit(raw, index, catalog, decode=decode, modules=modules)
        if unit is not None:
            units.append(unit)
    return units


def prepare_maps(units: Sequence[AdapterUnit]) -> None:
    """Run each unit's preprocessor once (at its ``processor_res``); failures are an :class:`InvalidRequest`."""
    for unit in units:
        if unit.condition_map is None:
            unit.condition_map = run_map(unit.module, unit.image, unit.processor_res, unit.threshold_a,
                                         unit.threshold_b, where=unit.label)
