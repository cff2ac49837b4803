"""The axes of the X/Y/Z plot script: what each axis type changes in a processing object, how its values are written
(A1111's syntax) and how they are checked before any picture is made.

Values are a comma-separated list (CSV quoting allowed, so a Prompt S/R value may contain commas). Whole-number and
decimal axes also take ranges: ``1-5`` (every value), ``1-10 (+2)`` (a step) and ``1-10 [5]`` (that many values,
evenly spread). Axes with a fixed set of choices (sampler, scheduler, checkpoint, hires upscaler) accept the
dropdown's list instead of text. Every problem is an :class:`~modules.errors.InvalidRequest` naming the axis.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modules.errors import InvalidRequest, ModelNotFound
from modules.rng import get_fixed_seed

VALUES_HINT = "Write values like 1, 2, 3 or ranges 1-5, 1-10 (+2), 1-10 [5]."
MAX_VALUES_PER_AXIS = 1000


@dataclass
class AxisOption:
    """One axis type: ``apply(p, value)`` sets it on a processing object's copy."""

    label: str
    kind: type
    apply: Callable[[Any, Any], None]
    choices: Callable[[], list[str]] | None = None
    check: Callable[[AxisOption, Any, list], list] | None = None
    """Validates (and may normalise) every value before the first picture; raises InvalidRequest."""
    format_value: Callable[[AxisOption, Any], str] | None = None
    cost: float = 0.0
    """Switching this axis is expensive (a checkpoint load): it changes least often while cells are made."""
    tabs: tuple[bool, ...] = (False, True)
    """``is_img2img`` values of the tabs that show this axis."""
    aliases: tuple[str, ...] = field(default_factory=tuple)
    expand: Callable[[list[str], str], list] | None = None
    """Turns the written values into the axis values (Prompt order: every permutation of the terms)."""

    def label_for(self, value: Any) -> str:
        """The legend text of one value (``"Steps: 20"``)."""
        if self.format_value is not None:
            return self.format_value(self, value)
        if isinstance(value, float):
            value = round(value, 8)
        return f"{self.label}: {value}"


# --- value parsing ---------------------------------------------------------------------------------------------------

_INT = r"[+-]?\d+"
_FLOAT = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"


def _range_patterns(number: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    step = re.compile(rf"^\s*({number})\s*-\s*({number})\s*(?:\(\s*({number})\s*\))?\s*$")
    count = re.compile(rf"^\s*({number})\s*-\s*({number})\s*\[\s*(\d+)\s*\]\s*$")
    return step, count


_INT_RANGES = _range_patterns(_INT)
_FLOAT_RANGES = _range_patterns(_FLOAT)


def split_values(text: str) -> list[str]:
    """Comma-separated values, CSV quoting honoured (``"a, b", c``), blanks dropped."""
    rows = list(csv.reader(io.StringIO(text or ""), skipinitialspace=True))
    return [value.strip() for row in rows for value in row if value.strip()]


def join_values(values: Sequence[Any]) -> str:
    """The inverse of :func:`split_values` (quoting where needed), for infotexts and the UI."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow([str(v) for v in values])
    return buffer.getvalue()


def _expand(value: str, kind: type, where: str) -> list[Any]:
    step_re, count_re = _INT_RANGES if kind is int else _FLOAT_RANGES
    m = count_re.match(value)
    if m:
        start, end, count = kind(m.group(1)), kind(m.group(2)), int(m.group(3))
        if count < 1:
            raise InvalidRequest(f"{where}: {value!r} asks for no values.", VALUES_HINT)
        spread = np.linspace(start, end, num=count)
        return [int(x) for x in spread] if kind is int else [round(float(x), 8) for x in spread]
    m = step_re.match(value)
    if m:
        start, end = kind(m.group(1)), kind(m.group(2))
        step = kind(m.group(3)) if m.group(3) is not None else kind(1)
        if step == 0 or (end - start) * step < 0:
            raise InvalidRequest(f"{where}: the range {value!r} never reaches its end.",
                                 "Use a step with the direction of the range, e.g. 10-1 (-3).")
        n = math.floor((end - start) / step + 1e-9) + 1
        if n > MAX_VALUES_PER_AXIS:
            raise InvalidRequest(f"{where}: {value!r} gives {n} values (at most {MAX_VALUES_PER_AXIS}).",
                                 "Use a larger step or a [count].")
        return [start + i * step for i in range(n)] if kind is int else [round(start + i * step, 8)
                                                                         for i in range(n)]
    try:
        number = float(value) if kind is float else int(value)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise InvalidRequest(f"{where}: {value!r} is not {what} or a range.", VALUES_HINT) from None
    return [number]


def parse_values(option: AxisOption, text: str | None, dropdown: Sequence[Any] | None = None,
                 csv_mode: bool = False, *, axis: str = "X") -> list[Any]:
    """The values of an axis, ranges expanded; the dropdown list wins for choice axes unless ``csv_mode``."""
    where = f"{axis} axis ({option.label})"
    if option.kind is type(None):
        return [None]
    if isinstance(text, list | tuple):  # an API client may send the values as a JSON list
        text = join_values(text)
    if isinstance(dropdown, str):
        dropdown = split_values(dropdown)
    if option.choices is not None and dropdown and not csv_mode:
        raw = [str(v) for v in dropdown]
    else:
        raw = split_values(text or "")
    if not raw:
        raise InvalidRequest(f"{where} has no values.", "Enter comma-separated values or set its type to Nothing.")
    values: list[Any] = []
    for item in raw:
        values += _expand(item, option.kind, where) if option.kind in (int, float) else [item]
    if option.expand is not None:
        values = option.expand(values, where)
    if len(values) > MAX_VALUES_PER_AXIS:
        raise InvalidRequest(f"{where} has {len(values)} values (at most {MAX_VALUES_PER_AXIS}).", VALUES_HINT)
    if option.check is not None:
        values = option.check(option, values, [where])
    return values


def fix_seed_values(values: list[Any], keep_random: bool) -> list[Any]:
    """Seed axes: -1 (or blank) becomes one concrete random seed per value unless "Keep -1 for seeds"."""
    if keep_random:
        return values
    return [get_fixed_seed(v) if v in (None, "", -1) else v for v in values]


# --- checks ----------------------------------------------------------------------------------------------------------

def _at_least(minimum: float, maximum: float | None = None) -> Callable[[AxisOption, Any, list], list]:
    def check(option: AxisOption, values: list, where: list) -> list:
        for v in values:
            if v < minimum or (maximum is not None and v > maximum):
                bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
                raise InvalidRequest(f"{where[0]}: {v} is out of range; values must be {bounds}.", VALUES_HINT)
        return values

    return check


def _check_choice(resolve: Callable[[str], str]) -> Callable[[AxisOption, Any, list], list]:
    """Each value resolved to its canonical name; an unknown one lists the valid choices."""

    def check(option: AxisOption, values: list, where: list) -> list:
        found = []
        for v in values:
            try:
                found.append(resolve(str(v)))
            except (ValueError, KeyError, ModelNotFound):
                valid = ", ".join(option.choices()) if option.choices else ""
                raise InvalidRequest(f"{where[0]}: unknown value {v!r}.",
                                     f"Valid values: {valid}." if valid else "") from None
        return found

    return check


def _check_size(option: AxisOption, values: list, where: list) -> list:
    sizes = []
    for v in values:
        m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", str(v))
        if not m or int(m.group(1)) <= 0 or int(m.group(2)) <= 0 or int(m.group(1)) % 8 or int(m.group(2)) % 8:
            raise InvalidRequest(f"{where[0]}: {v!r} is not a size like 512x768.",
                                 "Write WIDTHxHEIGHT, both positive multiples of 8.")
        sizes.append(f"{int(m.group(1))}x{int(m.group(2))}")
    return sizes


def _check_prompt_sr(option: AxisOption, values: list, where: list) -> list:
    """The search text is the first value; it must be in the prompt or negative prompt (checked in ``confirm``)."""
    return values


def confirm_prompt_sr(p: Any, values: Sequence[str], axis: str) -> None:
    """Prompt S/R replaces its first value; a first value found in neither prompt is an error before any picture."""
    search = values[0]
    prompt = " ".join(p.prompt) if isinstance(p.prompt, list) else str(p.prompt or "")
    negative = " ".join(p.negative_prompt) if isinstance(p.negative_prompt, list) else str(p.negative_prompt or "")
    if search not in prompt and search not in negative:
        raise InvalidRequest(f"{axis} axis (Prompt S/R): {search!r} is not in the prompt or the negative prompt.",
                             "The first value is the text to search for; the others replace it.")


def permutations(terms: list[str], where: str) -> list[tuple[str, ...]]:
    """Prompt order: every order of the terms (n! values, so a few terms only)."""
    if math.factorial(len(terms)) > MAX_VALUES_PER_AXIS:
        raise InvalidRequest(f"{where}: {len(terms)} terms have {math.factorial(len(terms))} orders "
                             f"(at most {MAX_VALUES_PER_AXIS}).", "Use at most 6 terms.")
    return list(itertools.permutations(terms))


def confirm_prompt_order(p: Any, values: Sequence[tuple[str, ...]], axis: str) -> None:
    """Every term of a Prompt order axis must be in the prompt."""
    prompt = str(p.prompt if isinstance(p.prompt, str) else " ".join(p.prompt or []))
    missing = [term for term in values[0] if term not in prompt]
    if missing:
        raise InvalidRequest(f"{axis} axis (Prompt order): {', '.join(repr(t) for t in missing)} not in the prompt.",
                             "Each value is a piece of the prompt whose position is permuted.")


# --- appliers --------------------------------------------------------------------------------------------------------

def _set(name: str) -> Callable[[Any, Any], None]:
    def apply(p: Any, value: Any) -> None:
        setattr(p, name, value)

    return apply


def _override(key: str) -> Callable[[Any, Any], None]:
    def apply(p: Any, value: Any) -> None:
        p.override_settings[key] = value

    return apply


def _apply_prompt_sr(search: str) -> Callable[[Any, Any], None]:
    def apply(p: Any, value: Any) -> None:
        def replace(text: Any) -> Any:
            if isinstance(text, list):
                return [t.replace(search, value) for t in text]
            return text.replace(search, value) if isinstance(text, str) else text

        p.prompt = replace(p.prompt)
        p.negative_prompt = replace(p.negative_prompt)

    return apply


def _apply_order(p: Any, order: tuple[str, ...]) -> None:
    """Put the terms back into the prompt in ``order``, at the places the terms had (sorted by position)."""
    if not isinstance(p.prompt, str):
        return
    rest = p.prompt
    pieces = []
    for term in sorted(order, key=rest.find):
        at = rest.find(term)
        pieces.append(rest[:at])
        rest = rest[at + len(term):]
    p.prompt = "".join(piece + term for piece, term in zip(pieces, order, strict=True)) + rest


def _apply_size(p: Any, value: str) -> None:
    width, height = (int(x) for x in value.lower().split("x"))
    p.width, p.height = width, height


def _apply_nothing(p: Any, value: Any) -> None:
    pass


def _no_label(option: AxisOption, value: Any) -> str:
    return ""


def _value_only(option: AxisOption, value: Any) -> str:
    return str(value)


def _joined(option: AxisOption, value: Any) -> str:
    return ", ".join(value)


# --- choices ---------------------------------------------------------------------------------------------------------

def sampler_names() -> list[str]:
    from modules.samplers import registry

    return registry.sampler_names()


def resolve_sampler(name: str) -> str:
    from modules.samplers import registry

    sampler, scheduler = registry.split_sampler_scheduler(name)
    return name.strip() if scheduler is not None else sampler  # processing splits "DPM++ 2M Karras" itself


def scheduler_labels() -> list[str]:
    from modules.samplers.schedulers import schedulers

    return [s.label for s in schedulers]


def resolve_scheduler(name: str) -> str:
    from modules.samplers.schedulers import find_scheduler

    return find_scheduler(name).label


def hires_upscaler_names() -> list[str]:
    from modules import shared, upscaling

    names = [*upscaling.latent_upscale_modes, *(u.name for u in upscaling.builtin_upscalers())]
    paths = shared.paths
    if paths is not None and hasattr(paths, "model_dir"):
        with contextlib.suppress(OSError):
            names += [u.name for u in upscaling.list_upscalers([paths.model_dir("ESRGAN")]) if u.path is not None]
    return names


def resolve_hires_upscaler(name: str) -> str:
    for known in hires_upscaler_names():
        if known.lower() == name.strip().lower():
            return known
    raise KeyError(name)


# --- the table -------------------------------------------------------------------------------------------------------

def _seed_axis(label: str, attr: str) -> AxisOption:
    return AxisOption(label, int, _set(attr))


def build_axis_options() -> list[AxisOption]:
    """Every axis type in UI order; ``tabs`` filters them per tab. Up to "Checkpoint name" the order (and so a
    type's index on each tab) is A1111's; A1111's sigma and schedule-parameter axes are not offered."""
    from modules import checkpoint_switch as ckpt

    return [
        AxisOption("Nothing", type(None), _apply_nothing, format_value=_no_label),
        _seed_axis("Seed", "seed"),
        _seed_axis("Var. seed", "subseed"),
        AxisOption("Var. strength", float, _set("subseed_strength"), check=_at_least(0.0, 1.0)),
        AxisOption("Steps", int, _set("steps"), check=_at_least(1)),
        AxisOption("Hires steps", int, _set("hr_second_pass_steps"), check=_at_least(0), tabs=(False,)),
        AxisOption("CFG Scale", float, _set("cfg_scale"), check=_at_least(0.0)),
        AxisOption("Image CFG Scale", float, _set("image_cfg_scale"), check=_at_least(0.0), tabs=(True,)),
        AxisOption("Prompt S/R", str, _apply_prompt_sr(""), check=_check_prompt_sr, format_value=_value_only),
        AxisOption("Prompt order", str, _apply_order, format_value=_joined, expand=permutations),
        AxisOption("Sampler", str, _set("sampler_name"), choices=sampler_names, check=_check_choice(resolve_sampler),
                   format_value=_value_only),
        AxisOption("Hires sampler", str, _set("hr_sampler_name"), choices=sampler_names,
                   check=_check_choice(resolve_sampler), format_value=_value_only, tabs=(False,)),
        AxisOption("Checkpoint name", str, ckpt.apply_checkpoint, choices=ckpt.checkpoint_titles,
                   check=_check_choice(ckpt.resolve_title), format_value=ckpt.format_checkpoint,
                   cost=1.0),
        AxisOption("Schedule type", str, _set("scheduler"), choices=scheduler_labels,
                   check=_check_choice(resolve_scheduler), aliases=("Scheduler",)),
        AxisOption("Eta", float, _set("eta"), check=_at_least(0.0)),
        AxisOption("Clip skip", int, _override("CLIP_stop_at_last_layers"), check=_at_least(1, 12)),
        AxisOption("Denoising", float, _set("denoising_strength"), check=_at_least(0.0, 1.0)),
        AxisOption("Hires upscaler", str, _set("hr_upscaler"), choices=hires_upscaler_names,
                   check=_check_choice(resolve_hires_upscaler), tabs=(False,)),
        AxisOption("Size", str, _apply_size, check=_check_size),
    ]


def axis_options(is_img2img: bool) -> list[AxisOption]:
    """The axis types one tab offers; the API's axis-type index counts in this list."""
    return [option for option in build_axis_options() if is_img2img in option.tabs]


def find_axis(choice: Any, options: Sequence[AxisOption], axis: str = "X") -> AxisOption:
    """An axis type by its index in ``options`` (what the UI dropdown sends) or by label, case-insensitively."""
    if choice is None or choice == "":
        return options[0]
    if isinstance(choice, bool):
        choice = int(choice)
    if isinstance(choice, int) or (isinstance(choice, str) and choice.strip().isdigit()):
        index = int(choice)
        if 0 <= index < len(options):
            return options[index]
    else:
        wanted = str(choice).strip().lower()
        for option in options:
            if wanted in (option.label.lower(), *(a.lower() for a in option.aliases)):
                return option
    valid = ", ".join(o.label for o in options)
    raise InvalidRequest(f"{axis} type {choice!r} is not an axis type of this tab.",
                         f"Give its label or its index (0-{len(options) - 1}) among: {valid}.")


def bind_prompt_sr(option: AxisOption, values: Sequence[str]) -> AxisOption:
    """Prompt S/R's applier needs the search text, which is the axis' first value."""
    if option.label != "Prompt S/R":
        return option
    return AxisOption(option.label, option.kind, _apply_prompt_sr(values[0]), check=option.check,
                      format_value=option.format_value, tabs=option.tabs)
