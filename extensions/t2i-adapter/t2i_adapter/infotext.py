"""Infotext entries of the T2I-Adapter units, and reading them back when an infotext is pasted.

Each enabled unit is one entry, keyed by its slot, in sd-webui-controlnet's style::

    T2I-Adapter 0: "module: canny, model: t2iadapter_canny_sd15v2 [1a2b3c4d5e], weight: 1.0, guidance start: 0.0,
    guidance end: 1.0, resize mode: Crop and resize, processor res: 512, threshold a: 100.0, threshold b: 200.0"

(one line; the infotext writer quotes the value because it holds commas and colons). The model is written as
``name [short hash]`` so a pasted infotext finds the file again even when it was renamed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .ui_conditions import NO_PREPROCESSOR, threshold_specs

KEY_PREFIX = "T2I-Adapter "
# infotext label -> unit field, in the order they are written
LABELS = {
    "module": "module", "model": "model", "weight": "weight", "guidance start": "guidance_start",
    "guidance end": "guidance_end", "resize mode": "resize_mode", "processor res": "processor_res",
    "threshold a": "threshold_a", "threshold b": "threshold_b",
}
_FLOAT_FIELDS = ("weight", "guidance_start", "guidance_end", "threshold_a", "threshold_b")
_ENTRY = re.compile(r"(?:^|,\s*)(" + "|".join(re.escape(k) for k in LABELS) + r"):\s*", re.IGNORECASE)


def infotext_key(index: int) -> str:
    return f"{KEY_PREFIX}{index}"


def unit_infotext(unit: Any, model_title: str) -> str:
    """The entry's value for a checked unit (:class:`~t2i_adapter.units.AdapterUnit`); the preprocessor's resolution
    and thresholds are written only for a preprocessor that uses them."""
    values: dict[str, Any] = {"module": unit.module, "model": model_title, "weight": unit.weight,
                              "guidance start": unit.guidance_start, "guidance end": unit.guidance_end,
                              "resize mode": unit.resize_mode}
    if unit.module != NO_PREPROCESSOR:
        values["processor res"] = unit.processor_res
        for label, (_, spec), value in zip(("threshold a", "threshold b"), threshold_specs(unit.module),
                                           (unit.threshold_a, unit.threshold_b), strict=False):
            values[label] = float(value if value is not None else spec.get("value", 0))
    return ", ".join(f"{label}: {_number_text(value)}" for label, value in values.items())


def _number_text(value: Any) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def parse_unit_infotext(text: str) -> dict[str, Any]:
    """An entry's value -> unit fields (``module``, ``model``, ``weight``, ...); numbers converted, unknown parts
    dropped. Labels match in any case; a model name may itself hold commas."""
    matches = list(_ENTRY.finditer(str(text)))
    fields: dict[str, Any] = {}
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        field = LABELS[match.group(1).lower()]
        value = str(text)[match.end(): end].strip()
        try:
            if field in _FLOAT_FIELDS:
                fields[field] = float(value)
            elif field == "processor_res":
                fields[field] = int(float(value))
            else:
                fields[field] = value
        except ValueError:
            continue
    return fields


def units_from_params(params: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """``{slot: unit fields}`` for every ``T2I-Adapter <n>`` entry of a parsed infotext."""
    found = {}
    for key, value in params.items():
        if isinstance(key, str) and key.startswith(KEY_PREFIX) and key[len(KEY_PREFIX):].strip().isdigit():
            found[int(key[len(KEY_PREFIX):])] = parse_unit_infotext(str(value))
    return found
