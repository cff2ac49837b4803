"""Helpers every UI tab uses: widget defaults from ``ui-config.json``, error and infotext HTML, the styles database
and the "paste parameters" machinery (A1111's paste fields: infotext key or function → component).
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from modules import infotext
from modules.errors import AtelierError

log = logging.getLogger(__name__)


@dataclass
class UiEnv:
    """What every tab builder gets: the app context (settings, folders, queue, model), flags, widget defaults and
    the styles database."""

    ctx: Any
    args: Any
    defaults: UiDefaults
    styles: Any


@dataclass
class UiDefaults:
    """Widget defaults keyed like A1111's ``ui-config.json`` (``"txt2img/Width/value": 512``)."""

    values: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None) -> UiDefaults:
        """Read the file; a missing or broken file gives the built-in defaults (with a warning for a broken one)."""
        if path is None or not Path(path).is_file():
            return cls()
        try:
            data = json.loads(Path(path).read_text(encoding="utf8"))
        except (OSError, ValueError) as e:
            log.warning("Ignoring %s: %s", path, e)
            return cls()
        return cls(data if isinstance(data, dict) else {})

    def get(self, tab: str, label: str, default: Any, key: str = "value") -> Any:
        value = self.values.get(f"{tab}/{label}/{key}", default)
        if isinstance(default, bool) or not isinstance(default, (int, float)) or isinstance(value, type(default)):
            return value
        try:
            return type(default)(value)
        except (TypeError, ValueError):
            return default


# messages ----------------------------------------------------------------------------------------------------------
def error_message(exc: BaseException) -> tuple[str, str]:
    """(what went wrong, what to do) for any exception; typed errors carry their own hint."""
    if isinstance(exc, AtelierError):
        return exc.message, exc.hint
    return (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
            "This is a bug or an internal failure; the server log has the details.")


def error_html(exc: BaseException) -> str:
    message, hint = error_message(exc)
    hint_html = f"<p class='atelier-error-hint'>{html.escape(hint)}</p>" if hint else ""
    return (f"<div class='atelier-error' role='alert'><p class='atelier-error-message'>"
            f"<b>Error:</b> {html.escape(message)}</p>{hint_html}</div>")


def infotext_html(text: str | None) -> str:
    """The infotext as HTML that keeps its line breaks (A1111's ``plaintext_to_html``)."""
    if not text:
        return ""
    lines = "<br>".join(html.escape(line) for line in text.split("\n"))
    return f"<div class='infotext'><p>{lines}</p></div>"


# paste fields -----------------------------------------------------------------------------------------------------
def paste_value(component: Any, value: Any) -> Any:
    """``value`` (a string from an infotext, or a function's result) converted for ``component``; ``gr.skip()``
    when it cannot be used, so the component keeps what it had."""
    if value is None:
        return gr.skip()
    if isinstance(value, gr.blocks.Block):  # a field function gave a full update (e.g. new choices)
        return value
    try:
        if isinstance(component, gr.Checkbox):
            return value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1", "yes", "on")
        if isinstance(component, (gr.Slider, gr.Number)):
            number = float(value)
            return int(number) if number.is_integer() else number
        if isinstance(component, gr.Dropdown):
            return _dropdown_value(component, value)
        if isinstance(component, gr.Image):
            return value
        return str(value) if not isinstance(value, (list, dict)) else value
    except (TypeError, ValueError):
        log.debug("cannot paste %r into %s", value, component, exc_info=True)
        return gr.skip()


def _dropdown_value(component: gr.Dropdown, value: Any) -> Any:
    choices = [c[1] if isinstance(c, (tuple, list)) else c for c in (component.choices or [])]
    if component.multiselect:
        values = value if isinstance(value, list) else [v.strip() for v in str(value).split(",") if v.strip()]
        return [v for v in values if v in choices or component.allow_custom_value]
    text = str(value)
    if text in choices or component.allow_custom_value:
        return text
    lowered = {str(c).lower(): c for c in choices}
    return lowered.get(text.lower(), gr.skip())


def paste_values(fields: Sequence[tuple[Any, Any]], params: dict[str, Any]) -> list[Any]:
    """One output value per ``(component, key or function)`` field for the parsed infotext ``params``."""
    values = []
    for component, target in fields:
        try:
            value = target(params) if callable(target) else params.get(target)
        except Exception:  # one bad field must not stop the others (A1111 does the same)
            log.exception("paste field %s failed", target)
            value = None
        values.append(paste_value(component, value))
    return values


def registered_fields(tabname: str) -> list[tuple[Any, Any]]:
    """The paste fields of a tab, including any an extension appended to ``modules.infotext.paste_fields``."""
    entry = infotext.paste_fields.get(tabname) or {}
    return [(f[0], f[1]) for f in (entry.get("fields") or [])]


def parse_infotext(text: str | None) -> dict[str, Any]:
    return infotext.parse_generation_parameters(text) if text and text.strip() else {}


def paste_handler(tabname: str, fields: list[tuple[Any, Any]],
                  extra: Callable[[dict[str, Any]], list[Any]] | None = None) -> Callable[..., list[Any]]:
    """A handler ``(infotext, ...) -> values``: parsed fields first, then what ``extra(params)`` returns."""

    def paste(text: str | None, *_: Any) -> list[Any]:
        params = parse_infotext(text)
        return paste_values(fields, params) + (extra(params) if extra else [])

    paste.__name__ = f"paste_{tabname}"
    return paste
