"""The ``infotext`` request field: a pasted "parameters" text fills every request field the caller did not set.

As A1111's ``Api.apply_infotext``: fields named in the request win (pydantic's ``model_fields_set``); settings the
infotext names ("Clip skip", "ENSD", ...) become ``override_settings`` unless the request overrides them itself; and
"Model hash" / "Model" select that checkpoint for the job when it exists here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from modules.errors import InvalidRequest
from modules.infotext import get_override_settings, parse_generation_parameters
from modules.options import Options
from modules.sd_models import CheckpointInfo, checkpoint_aliases


def _int(value: Any) -> int:
    number = float(value)
    if not number.is_integer():
        raise ValueError(value)
    return int(number)


# infotext label -> (request field, converter); fields a request model lacks are skipped.
FIELDS: tuple[tuple[str, str, Callable[[Any], Any]], ...] = (
    ("Prompt", "prompt", str),
    ("Negative prompt", "negative_prompt", str),
    ("Styles array", "styles", list),
    ("Steps", "steps", _int),
    ("Sampler", "sampler_name", str),
    ("Schedule type", "scheduler", str),
    ("CFG scale", "cfg_scale", float),
    ("Image CFG scale", "image_cfg_scale", float),
    ("Seed", "seed", _int),
    ("Size-1", "width", _int),
    ("Size-2", "height", _int),
    ("Variation seed", "subseed", _int),
    ("Variation seed strength", "subseed_strength", float),
    ("Seed resize from-1", "seed_resize_from_w", _int),
    ("Seed resize from-2", "seed_resize_from_h", _int),
    ("Denoising strength", "denoising_strength", float),
    ("Mask blur", "mask_blur", _int),
    ("Noise multiplier", "initial_noise_multiplier", float),
    ("Hires upscale", "hr_scale", float),
    ("Hires upscaler", "hr_upscaler", str),
    ("Hires steps", "hr_second_pass_steps", _int),
    ("Hires resize-1", "hr_resize_x", _int),
    ("Hires resize-2", "hr_resize_y", _int),
    ("Hires prompt", "hr_prompt", str),
    ("Hires negative prompt", "hr_negative_prompt", str),
)


def _uses_hires(params: dict[str, Any]) -> bool:
    """A1111's paste rule for "Hires fix": a denoising strength plus any hires size or upscaler field."""
    if "Denoising strength" not in params:
        return False
    resized = str(params.get("Hires resize-1", 0)) not in ("0", "")
    return "Hires upscale" in params or "Hires upscaler" in params or resized


def request_values(params: dict[str, Any], field_names: set[str]) -> dict[str, Any]:
    """Request field → value for every infotext field this request model has, converted to the field's type."""
    values: dict[str, Any] = {}
    for label, name, convert in FIELDS:
        if name not in field_names or params.get(label) is None:
            continue
        try:
            values[name] = convert(params[label])
        except (TypeError, ValueError) as e:
            raise InvalidRequest(f"infotext: {label} {params[label]!r} is not a valid {name}.",
                                 "Fix or remove that part of the infotext.") from e
    if "enable_hr" in field_names and _uses_hires(params):
        values["enable_hr"] = True
    return values


def checkpoint_from_params(params: dict[str, Any], checkpoints: dict[str, CheckpointInfo]) -> str | None:
    """The title of the checkpoint an infotext names by "Model hash" or "Model", when it is installed here."""
    aliases = checkpoint_aliases(checkpoints)
    for label in ("Model hash", "Model"):
        found = aliases.get(str(params.get(label) or ""))
        if found is not None:
            return found.title
    return None


def apply_infotext(req: Any, opts: Options, checkpoints: dict[str, CheckpointInfo]) -> dict[str, Any]:
    """Fill ``req`` from ``req.infotext``; returns the parsed parameters ({} when there is no infotext)."""
    text = getattr(req, "infotext", None)
    if not text:
        return {}
    explicit = set(req.model_fields_set)
    params = parse_generation_parameters(text, skip_fields=[])
    for name, value in request_values(params, set(type(req).model_fields)).items():
        if name not in explicit:
            setattr(req, name, value)
    overrides = dict(req.override_settings or {})
    for _label, setting, value in get_override_settings(params, opts=opts):
        overrides.setdefault(setting, value)
    checkpoint = checkpoint_from_params(params, checkpoints)
    if checkpoint is not None:
        overrides.setdefault("sd_model_checkpoint", checkpoint)
    req.override_settings = overrides
    return params
