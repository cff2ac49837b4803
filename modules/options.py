"""Settings: declared once with default, label, section and type; stored in `config.json`.

The API mirrors A1111's `modules/options.py` (`OptionInfo`, `Options`, `opts.<name>`, `opts.set`, `opts.save`,
`opts.onchange`, `options_section`) because extensions call it. Saving is atomic (temp file + rename), so a crash or
a full disk never leaves a half-written `config.json`; a corrupt file is moved aside with a warning and the defaults
load, so a bad edit never stops the app from starting.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class OptionInfo:
    """One setting's declaration. Field names follow A1111's so extension code that builds these keeps working."""

    default: Any = None
    label: str = ""
    component: Any = None
    component_args: Any = None
    onchange: Callable[[], None] | None = None
    section: tuple[str, str] | None = None
    refresh: Callable[[], None] | None = None
    comment_before: str = ""
    comment_after: str = ""
    infotext: str | None = None
    restrict_api: bool = False
    category_id: str | None = None
    do_not_save: bool = False
    needs_restart_flag: bool = False
    needs_reload_ui_flag: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def info(self, text: str) -> OptionInfo:
        self.comment_after += f" ({text})"
        return self

    def html(self, html: str) -> OptionInfo:
        self.comment_after += html
        return self

    def link(self, label: str, url: str) -> OptionInfo:
        self.comment_before += f"[{label}]({url})"
        return self

    def js(self, label: str, js_func: str) -> OptionInfo:
        self.extra.setdefault("js", []).append((label, js_func))
        return self

    def needs_restart(self) -> OptionInfo:
        self.needs_restart_flag = True
        self.comment_after += " (requires restart)"
        return self

    def needs_reload_ui(self) -> OptionInfo:
        self.needs_reload_ui_flag = True
        self.comment_after += " (requires Reload UI)"
        return self


def options_section(section_identifier: tuple[str, str], options_dict: dict[str, OptionInfo],
                    category_id: str | None = None) -> dict[str, OptionInfo]:
    """Tag every option in `options_dict` with its settings section, as A1111's helper of the same name does."""
    for info in options_dict.values():
        info.section = section_identifier
        if category_id is not None:
            info.category_id = category_id
    return options_dict


class SettingsError(ValueError):
    """A setting the user cannot change (frozen, unknown or of the wrong type)."""


class Options:
    """Live settings values with attribute access (`opts.samples_format`)."""

    def __init__(self, templates: dict[str, OptionInfo], *, frozen: bool = False,
                 frozen_sections: Iterable[str] = (), frozen_keys: Iterable[str] = ()) -> None:
        object.__setattr__(self, "data_labels", dict(templates))
        object.__setattr__(self, "data", {k: v.default for k, v in templates.items()})
        object.__setattr__(self, "frozen", frozen)
        object.__setattr__(self, "frozen_sections", set(frozen_sections))
        object.__setattr__(self, "frozen_keys", set(frozen_keys))

    # attribute access -------------------------------------------------------------------------------------------
    def __getattr__(self, item: str) -> Any:
        data = object.__getattribute__(self, "data")
        if item in data:
            return data[item]
        labels = object.__getattribute__(self, "data_labels")
        if item in labels:
            return labels[item].default
        raise AttributeError(f"no setting named {item!r}")

    def __setattr__(self, key: str, value: Any) -> None:
        if key in self.data_labels:
            self.set(key, value)
        else:
            object.__setattr__(self, key, value)

    # changes ----------------------------------------------------------------------------------------------------
    def is_frozen(self, key: str) -> bool:
        info = self.data_labels.get(key)
        section = info.section[0] if info and info.section else None
        return self.frozen or key in self.frozen_keys or (section is not None and section in self.frozen_sections)

    def set(self, key: str, value: Any, is_api: bool = False, run_callbacks: bool = True) -> bool:
        """Change one setting; returns False when the value did not change. Raises `SettingsError` for bad input."""
        info = self.data_labels.get(key)
        if info is None:
            raise SettingsError(f"unknown setting {key!r}")
        if self.is_frozen(key):
            raise SettingsError(f"setting {key!r} is frozen by a command-line flag")
        if is_api and info.restrict_api:
            raise SettingsError(f"setting {key!r} cannot be changed through the API")
        value = self.cast_value(key, value)
        old = self.data.get(key, info.default)
        if old == value:
            return False
        self.data[key] = value
        if run_callbacks and info.onchange is not None:
            try:
                info.onchange()
            except Exception:
                self.data[key] = old
                raise
        return True

    def cast_value(self, key: str, value: Any) -> Any:
        """Convert a value from JSON or a form to the type of the setting's default, or explain why not."""
        default = self.data_labels[key].default
        if value is None or default is None:
            return value
        expected = type(default)
        if isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
            return value
        try:
            if expected is bool:
                if isinstance(value, str):
                    lowered = value.strip().lower()
                    if lowered in ("true", "1", "yes", "on"):
                        return True
                    if lowered in ("false", "0", "no", "off"):
                        return False
                    raise ValueError(value)
                if isinstance(value, (int, float)):
                    return bool(value)
                raise ValueError(value)
            if expected is int:
                as_float = float(value)
                if not as_float.is_integer():
                    raise ValueError(value)
                return int(as_float)
            if expected is float:
                return float(value)
            if expected is str:
                return str(value)
            if expected in (list, tuple):
                return expected(value)
        except (TypeError, ValueError):
            pass
        raise SettingsError(f"setting {key!r} expects {expected.__name__}, got {value!r}")

    def onchange(self, key: str, func: Callable[[], None], call: bool = True) -> None:
        self.data_labels[key].onchange = func
        if call:
            func()

    def add_option(self, key: str, info: OptionInfo) -> None:
        """Declare a setting later (extensions do this from `on_ui_settings`)."""
        self.data_labels[key] = info
        self.data.setdefault(key, info.default)

    def get_default(self, key: str) -> Any:
        return self.data_labels[key].default

    def dumpjson(self) -> str:
        return json.dumps(self.data)

    # persistence ------------------------------------------------------------------------------------------------
    def save(self, filename: str | os.PathLike[str]) -> None:
        """Write settings atomically: a temp file in the same folder, fsync, then rename over the old file."""
        path = Path(filename)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {k: v for k, v in self.data.items() if not self._do_not_save(k)}
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf8") as f:
                json.dump(payload, f, indent=4, ensure_ascii=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _do_not_save(self, key: str) -> bool:
        info = self.data_labels.get(key)
        return bool(info and info.do_not_save)

    def load(self, filename: str | os.PathLike[str]) -> None:
        """Load saved values over the defaults. A corrupt file is moved aside with a warning; defaults stay."""
        path = Path(filename)
        if not path.exists():
            return
        try:
            loaded = json.loads(path.read_text(encoding="utf8"))
            if not isinstance(loaded, dict):
                raise ValueError("top level is not a JSON object")
        except (ValueError, UnicodeDecodeError) as e:
            aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(path, aside)
            log.warning("Settings file %s could not be read (%s); moved it to %s and started with defaults.",
                        path, e, aside.name)
            return
        for key, value in loaded.items():
            if key in self.data_labels:
                try:
                    self.data[key] = self.cast_value(key, value)
                except SettingsError as e:
                    log.warning("Ignoring saved value for %s: %s", key, e)
            else:
                self.data[key] = value  # kept for extensions that declare their settings later
