"""Parameter specs of the preprocessors: what the UI draws as a slider or a box, and how a request's value is checked.

A spec is also the public description (``preprocessor_params``): ``{"label", "type", "value"}`` plus ``min``, ``max``
and ``step`` for sliders and numbers. Types: ``slider`` (float or int), ``number`` (an integer box, e.g. a seed),
``checkbox`` and ``text``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .errors import PreprocessorError


@dataclass(frozen=True)
class Param:
    """One knob of a preprocessor; ``integer`` sliders and numbers take whole values only."""

    name: str
    label: str
    value: Any
    type: str = "slider"
    min: float | None = None
    max: float | None = None
    step: float | None = None
    integer: bool = False

    def describe(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"label": self.label, "type": self.type, "value": self.value}
        if self.type in ("slider", "number"):
            spec.update(min=self.min, max=self.max, step=self.step if self.step is not None else 1)
        return spec

    def coerce(self, value: Any, preprocessor: str) -> Any:
        """The value as this knob's type, or a PreprocessorError saying what was expected."""
        where = f"{preprocessor}: parameter {self.name!r}"
        if self.type == "checkbox":
            if isinstance(value, bool):
                return value
            if value in (0, 1) or (isinstance(value, str) and value.lower() in ("true", "false", "0", "1")):
                return str(value).lower() in ("1", "true")
            raise PreprocessorError(f"{where} must be true or false, got {value!r}.")
        if self.type == "text":
            if value is None:
                return ""
            if isinstance(value, str | list | dict):
                return value
            raise PreprocessorError(f"{where} must be text, got {value!r}.")
        return self._number(value, where)

    def _number(self, value: Any, where: str) -> float | int:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise PreprocessorError(f"{where} must be a number, got {value!r}.")
        try:
            number = float(value)
        except ValueError:
            raise PreprocessorError(f"{where} must be a number, got {value!r}.") from None
        if not math.isfinite(number):
            raise PreprocessorError(f"{where} must be a finite number, got {value!r}.")
        if self.integer:
            if number != int(number):
                raise PreprocessorError(f"{where} must be a whole number, got {value!r}.")
            number = int(number)
        if (self.min is not None and number < self.min) or (self.max is not None and number > self.max):
            raise PreprocessorError(f"{where} must be between {self.min:g} and {self.max:g}, got {value!r}.",
                                    "GET /sdapi/v1/preprocessors lists every parameter with its range.")
        return number


def slider(name: str, label: str, value: float, lo: float, hi: float, step: float = 1, integer: bool = False) -> Param:
    return Param(name, label, value, "slider", lo, hi, step, integer)


def checkbox(name: str, label: str, value: bool = False) -> Param:
    return Param(name, label, value, "checkbox")


def resolve_params(preprocessor: str, params: tuple[Param, ...], given: dict[str, Any]) -> dict[str, Any]:
    """Every knob's value: the given ones checked, the rest at their defaults; unknown names are an error."""
    known = {p.name: p for p in params}
    unknown = sorted(set(given) - set(known))
    if unknown:
        valid = ", ".join(known) or "none"
        raise PreprocessorError(f"{preprocessor} has no parameter(s) {', '.join(map(repr, unknown))}; "
                                f"its parameters: {valid}.",
                                "GET /sdapi/v1/preprocessors lists every preprocessor's parameters.")
    return {name: (p.coerce(given[name], preprocessor) if name in given else p.value) for name, p in known.items()}
