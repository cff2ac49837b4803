"""Infotext: the "parameters" text A1111 writes into every image and pastes back into the UI.

Layout (A1111 ``processing.create_infotext``)::

    <prompt, may span lines>
    Negative prompt: <negative prompt, may span lines>     (omitted when empty)
    Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, ...

Writing and parsing follow A1111 byte for byte, because infotexts travel between installations: a PNG made here must
paste into A1111 and the other way round. Pure Python (no torch), so the API and UI can import it cheaply.
``modules.infotext_utils`` and ``modules.generation_parameters_copypaste`` are this same module under A1111's names.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

log = logging.getLogger(__name__)

# A1111's regexes: key = word char then [\w \-/]+, a colon, then a JSON-quoted string or anything up to a comma.
re_param_code = r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)'
re_param = re.compile(re_param_code)
re_imagesize = re.compile(r"^(\d+)x(\d+)$")

NEGATIVE_PROMPT_PREFIX = "Negative prompt:"

# processing.create_infotext's fixed keys, in A1111's order; extra_generation_params follow, then the tail keys.
INFOTEXT_KEY_ORDER: tuple[str, ...] = (
    "Steps", "Sampler", "Schedule type", "CFG scale", "Image CFG scale", "Seed", "Face restoration", "Size",
    "Model hash", "Model", "FP8 weight", "Cache FP16 weight for LoRA", "VAE hash", "VAE", "Variation seed",
    "Variation seed strength", "Seed resize from", "Denoising strength", "Conditional mask weight", "Clip skip",
    "ENSD", "Token merging ratio", "Token merging ratio hr", "Init image hash", "RNG", "Tiling",
)
INFOTEXT_TAIL_KEYS: tuple[str, ...] = ("Version", "User")

# Settings keys the parser reads; defaults as in A1111 so a bare install parses like a bare A1111.
_PARSE_OPTION_DEFAULTS: dict[str, Any] = {
    "infotext_styles": "Apply if any",
    "infotext_skip_pasting": [],
    "auto_backcompat": True,
    "use_old_hires_fix_width_height": False,
    "disable_weights_auto_swap": True,
}


# --- quoting -------------------------------------------------------------------------------------------------------

def quote(text: Any) -> Any:
    """JSON-quote a value whose text holds a comma, newline or colon (they would break the key/value line)."""
    as_text = str(text)
    if "," not in as_text and "\n" not in as_text and ":" not in as_text:
        return text
    try:
        return json.dumps(text, ensure_ascii=False)
    except TypeError:  # A1111 would crash on an unserialisable object; its text is the next best thing
        return json.dumps(as_text, ensure_ascii=False)


def unquote(text: str) -> str:
    """Undo `quote`: a value wrapped in double quotes is decoded as JSON; anything else is returned unchanged."""
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except Exception:
        return text


# --- writing -------------------------------------------------------------------------------------------------------

def merge_generation_params(base: Mapping[str, Any], extra: Mapping[str, Any] | None,
                            tail: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A1111's `{**base, **extra, **tail}`: a key already present keeps its place but takes the later value.

    That is how an extra "Schedule type" lands in the fixed slot after "Sampler" rather than at the end.
    """
    merged = dict(base)
    merged.update(extra or {})
    merged.update(tail or {})
    return merged


def resolve_param_values(params: Mapping[str, Any], index: int = 0,
                         context: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Per-image values as A1111 allows them in extra_generation_params: a list is indexed by image, a callable is
    called with the creating function's locals (`context`, e.g. p and index). A value that fails becomes None
    (dropped) with a log line.
    """
    context = context or {}
    resolved: dict[str, Any] = {}
    for key, value in params.items():
        try:
            if isinstance(value, list):
                value = value[index]
            elif callable(value):
                value = value(**context)
        except Exception:
            log.exception("infotext value for %r could not be computed", key)
            value = None
        resolved[key] = value
    return resolved


def create_infotext_text(prompt: str, negative_prompt: str, params: Mapping[str, Any]) -> str:
    """The infotext for one image: prompt, optional "Negative prompt:" line, then the "Key: value" line.

    None values are dropped; a pair whose value equals its key is written bare (e.g. "Tiling"); the result is stripped.
    """
    params_text = ", ".join(
        k if k == v else f"{k}: {quote(v)}" for k, v in params.items() if v is not None
    )
    negative_text = f"\n{NEGATIVE_PROMPT_PREFIX} {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative_text}\n{params_text}".strip()


# --- parsing -------------------------------------------------------------------------------------------------------

def split_infotext(text: str) -> tuple[str, str, dict[str, str]]:
    """The raw parse, no defaults: (prompt, negative prompt, {key: unquoted value}) in written order.

    The last line counts as the parameter line only when the key/value pattern matches it at least 3 times; otherwise
    it is part of the prompt (a prompt's own last line may well contain a colon).
    """
    *lines, last_line = text.strip().split("\n")
    if len(re_param.findall(last_line)) < 3:
        lines.append(last_line)
        last_line = ""

    prompt, negative_prompt, in_negative = "", "", False
    for line in lines:
        line = line.strip()
        if line.startswith(NEGATIVE_PROMPT_PREFIX):
            in_negative = True
            line = line[len(NEGATIVE_PROMPT_PREFIX):].strip()
        if in_negative:
            negative_prompt += ("" if negative_prompt == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line

    params: dict[str, str] = {}
    for key, value in re_param.findall(last_line):
        if value[:1] == '"' and value[-1:] == '"':
            value = unquote(value)
        params[key] = value
    return prompt, negative_prompt, params


def _infotext_pasted_callbacks(infotext: str, params: dict[str, Any]) -> None:
    """Extensions' ``on_infotext_pasted`` callbacks may add or fix parsed fields (A1111 calls them here too)."""
    callbacks = sys.modules.get("modules.script_callbacks")  # no extension system loaded: nobody registered any
    if callbacks is not None:
        callbacks.infotext_pasted_callback(infotext, params)


def parse_generation_parameters(x: str, skip_fields: list[str] | None = None) -> dict[str, Any]:
    """A1111's parser: prompt, negative prompt and every parameter, with A1111's defaults for missing ones.

    "WxH" values become "<Key>-1"/"<Key>-2" (e.g. Size-1, Size-2). Values stay strings, as in A1111.
    `skip_fields` defaults to the `infotext_skip_pasting` setting.
    """
    if skip_fields is None:
        skip_fields = list(_opt("infotext_skip_pasting") or [])

    prompt, negative_prompt, raw = split_infotext(x)
    res: dict[str, Any] = {}
    for key, value in raw.items():
        if value == "":  # A1111 fails on an empty value and skips it
            log.debug("empty infotext value for %r", key)
            continue
        m = re_imagesize.match(value)
        if m is not None:
            res[f"{key}-1"] = m.group(1)
            res[f"{key}-2"] = m.group(2)
        else:
            res[key] = value

    prompt, negative_prompt = _extract_styles(res, prompt, negative_prompt)
    res["Prompt"] = prompt
    res["Negative prompt"] = negative_prompt
    _fill_defaults(res, prompt, negative_prompt)
    backcompat(res)
    _infotext_pasted_callbacks(x, res)

    for key in skip_fields:
        res.pop(key, None)
    return res


def _fill_defaults(res: dict[str, Any], prompt: str, negative_prompt: str) -> None:
    """A1111 fills what an infotext leaves out with the value that was in effect when it was written."""
    res.setdefault("Clip skip", "1")  # missing clip skip means 1

    hypernet = res.get("Hypernet")
    if hypernet is not None:
        res["Prompt"] += f"<hypernet:{hypernet}:{res.get('Hypernet strength', '1.0')}>"

    if "Hires resize-1" not in res:
        res["Hires resize-1"] = 0
        res["Hires resize-2"] = 0
    res.setdefault("Hires sampler", "Use same sampler")
    res.setdefault("Hires schedule type", "Use same scheduler")
    res.setdefault("Hires checkpoint", "Use same checkpoint")
    res.setdefault("Hires prompt", "")
    res.setdefault("Hires negative prompt", "")
    res.setdefault("Mask mode", "Inpaint masked")
    res.setdefault("Masked content", "original")
    res.setdefault("Inpaint area", "Whole picture")
    res.setdefault("Masked area padding", 32)

    restore_old_hires_fix_params(res)

    res.setdefault("RNG", "GPU")  # missing RNG means the default, GPU
    res.setdefault("Schedule type", "Automatic")
    res.setdefault("Schedule max sigma", 0)
    res.setdefault("Schedule min sigma", 0)
    res.setdefault("Schedule rho", 0)
    res.setdefault("VAE Encoder", "Full")
    res.setdefault("VAE Decoder", "Full")
    res.setdefault("FP8 weight", "Disable")
    if "Cache FP16 weight for LoRA" not in res and res["FP8 weight"] != "Disable":
        res["Cache FP16 weight for LoRA"] = False

    if "Emphasis" not in res and _uses_emphasis(prompt, negative_prompt):
        res["Emphasis"] = "Original"
    res.setdefault("Refiner switch by sampling steps", False)


def _uses_emphasis(prompt: str, negative_prompt: str) -> bool:
    """True when a prompt has a weighted part, so an infotext without "Emphasis" predates the setting ("Original")."""
    from modules.prompt_parser import parse_prompt_attention

    parts = parse_prompt_attention(prompt) + parse_prompt_attention(negative_prompt)
    return any(weight != 1.0 and text != "BREAK" for text, weight in parts)


def _extract_styles(res: dict[str, Any], prompt: str, negative_prompt: str) -> tuple[str, str]:
    """Strip saved styles from the prompts (setting `infotext_styles`) when the style database can do it."""
    mode = _opt("infotext_styles")
    styles = _shared_attr("prompt_styles")
    extract = getattr(styles, "extract_styles_from_prompt", None)
    if mode == "Ignore" or extract is None:
        return prompt, negative_prompt
    found, prompt, negative_prompt = extract(prompt, negative_prompt)
    if mode == "Apply" or (mode == "Apply if any" and found):
        res["Styles array"] = found
    return prompt, negative_prompt


def old_hires_fix_first_pass_dimensions(width: int, height: int) -> tuple[int, int]:
    """The first-pass size A1111's old hires fix picked: ~512x512 pixels, each side rounded up to a multiple of 64."""
    scale = math.sqrt(512 * 512 / (width * height))
    return math.ceil(scale * width / 64) * 64, math.ceil(scale * height / 64) * 64


def restore_old_hires_fix_params(res: dict[str, Any]) -> None:
    """Old infotexts give "First pass size"; convert it to today's Size + Hires resize fields, as A1111 does."""
    firstpass_width = res.get("First pass size-1")
    firstpass_height = res.get("First pass size-2")

    if _opt("use_old_hires_fix_width_height"):
        hires_width = int(res.get("Hires resize-1", 0))
        hires_height = int(res.get("Hires resize-2", 0))
        if hires_width and hires_height:
            res["Size-1"] = hires_width
            res["Size-2"] = hires_height
            return

    if firstpass_width is None or firstpass_height is None:
        return

    firstpass_width, firstpass_height = int(firstpass_width), int(firstpass_height)
    width = int(res.get("Size-1", 512))
    height = int(res.get("Size-2", 512))
    if firstpass_width == 0 or firstpass_height == 0:
        firstpass_width, firstpass_height = old_hires_fix_first_pass_dimensions(width, height)

    res["Size-1"] = firstpass_width
    res["Size-2"] = firstpass_height
    res["Hires resize-1"] = width
    res["Hires resize-2"] = height


# --- version back-compat (A1111's infotext_versions) ---------------------------------------------------------------

def parse_version(text: str | None) -> Any:
    """The `Version` field as a comparable version ("v1.7.0-225-gabc" -> 1.7.0.post225), or None."""
    if text is None:
        return None
    from packaging import version

    m = re.match(r"([^-]+-[^-]+)-.*", text)
    if m:
        text = m.group(1)
    try:
        return version.parse(text)
    except Exception:
        return None


def backcompat(d: dict[str, Any]) -> None:
    """Turn on compatibility flags for infotexts written by older A1111 versions, so pasting reproduces the image."""
    if not _opt("auto_backcompat"):
        return
    ver = parse_version(d.get("Version"))
    if ver is None:
        return
    from packaging import version

    if ver < version.parse("1.6.0") and "[" in d.get("Prompt", ""):
        d["Old prompt editing timelines"] = True
    if ver < version.parse("1.6.0") and d.get("Sampler", "") in ("DDIM", "PLMS"):
        d["Pad conds v0"] = True
    if ver < version.parse("v1.7.0-225"):
        d["Downcast alphas_cumprod"] = True
    if ver < version.parse("1.8.0") and d.get("Refiner"):
        d["Refiner switch by sampling steps"] = True


# --- settings overrides --------------------------------------------------------------------------------------------

infotext_to_setting_name_mapping: list[tuple[str, str]] = []
"""Legacy (label, setting) pairs; new code declares `OptionInfo(..., infotext="Label")` instead."""


def _setting_mapping(opts: Any) -> list[tuple[str, str]]:
    labels = getattr(opts, "data_labels", {}) or {}
    return [(info.infotext, key) for key, info in labels.items() if info.infotext] + infotext_to_setting_name_mapping


def create_override_settings_dict(text_pairs: Iterable[str], opts: Any = None) -> dict[str, Any]:
    """["Clip skip: 2", "ENSD: 31337"] -> {"CLIP_stop_at_last_layers": 2, "eta_noise_seed_delta": 31337}."""
    opts = opts if opts is not None else _shared_attr("opts")
    params = {}
    for pair in text_pairs:
        key, value = pair.split(":", maxsplit=1)
        params[key] = value.strip()
    res = {}
    for label, setting in _setting_mapping(opts):
        value = params.get(label)
        if value is not None:
            res[setting] = opts.cast_value(setting, value)
    return res


def get_override_settings(params: Mapping[str, Any], *, skip_fields: Iterable[str] | None = None,
                          opts: Any = None) -> list[tuple[str, str, Any]]:
    """(label, setting, value) for each infotext field that names a setting and differs from its current value."""
    opts = opts if opts is not None else _shared_attr("opts")
    if opts is None:
        return []
    skip = set(skip_fields or ())
    res = []
    for label, setting in _setting_mapping(opts):
        value = params.get(label)
        if label in skip or value is None:
            continue
        if setting == "sd_model_checkpoint" and getattr(opts, "disable_weights_auto_swap", True):
            continue
        value = opts.cast_value(setting, value)
        if value == getattr(opts, setting, None):
            continue
        res.append((label, setting, value))
    return res


# --- paste-field registry (data only; the UI connects the buttons) -------------------------------------------------

class ParamBinding:
    """A "Send to <tab>" button and where its image/infotext come from (A1111's class of the same name)."""

    def __init__(self, paste_button: Any, tabname: str, source_text_component: Any = None,
                 source_image_component: Any = None, source_tabname: str | None = None,
                 override_settings_component: Any = None, paste_field_names: list[str] | None = None) -> None:
        self.paste_button = paste_button
        self.tabname = tabname
        self.source_text_component = source_text_component
        self.source_image_component = source_image_component
        self.source_tabname = source_tabname
        self.override_settings_component = override_settings_component
        self.paste_field_names = paste_field_names or []


class PasteField(tuple):
    """(component, target): target is an infotext label or a function `params -> value`."""

    def __new__(cls, component: Any, target: str | Callable[[dict], Any], *, api: str | None = None) -> PasteField:
        return super().__new__(cls, (component, target))

    def __init__(self, component: Any, target: str | Callable[[dict], Any], *, api: str | None = None) -> None:
        super().__init__()
        self.api = api
        self.component = component
        self.label = target if isinstance(target, str) else None
        self.function = target if callable(target) else None


paste_fields: dict[str, dict[str, Any]] = {}
registered_param_bindings: list[ParamBinding] = []


def reset() -> None:
    paste_fields.clear()
    registered_param_bindings.clear()


def add_paste_fields(tabname: str, init_img: Any, fields: list | None, override_settings_component: Any = None) -> None:
    """Register the components that pasted infotext fills for a tab (extensions add their own fields here)."""
    if fields:
        for i, field in enumerate(fields):
            if not isinstance(field, PasteField):
                fields[i] = PasteField(*field)
    paste_fields[tabname] = {"init_img": init_img, "fields": fields,
                             "override_settings_component": override_settings_component}


def register_paste_params_button(binding: ParamBinding) -> None:
    registered_param_bindings.append(binding)


# --- helpers -------------------------------------------------------------------------------------------------------

def _shared_attr(name: str) -> Any:
    from modules import shared

    return getattr(shared, name, None)


def _opt(key: str) -> Any:
    """A parser setting from `shared.opts` when the app has set it up, else A1111's default."""
    opts = _shared_attr("opts")
    default = _PARSE_OPTION_DEFAULTS[key]
    return default if opts is None else getattr(opts, key, default)
