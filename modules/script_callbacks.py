"""A1111's ``script_callbacks``: extensions register ``on_<event>(callback)``; the app calls ``<event>_callback(...)``.

Every callback is named ``<extension>/<script file>/<category>[/<name>]`` and ordered per category by its
registration order, moved by the owning extension's ``metadata.ini`` sections ``[callbacks/<callback name>]``
(``Before=``/``After=`` naming other callbacks or extensions). One failing callback is logged with its name and the
others still run. Processing reaches these functions through ``p.callbacks`` (this module), never by import.

The parameter classes keep A1111's names and fields; the CFG, extra-noise and image-save ones are the objects
the pipeline builds (defined next to the code that fills them) and are re-exported here.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from modules.images import ImageSaveParams
from modules.processing_hooks import ExtraNoiseParams
from modules.samplers.cfg_denoiser import AfterCFGCallbackParams, CFGDenoisedParams, CFGDenoiserParams

__all__ = [
    "AfterCFGCallbackParams", "BeforeTokenCounterParams", "CFGDenoisedParams", "CFGDenoiserParams",
    "ExtraNoiseParams", "ImageGridLoopParams", "ImageSaveParams", "ScriptCallback", "UiTrainTabParams",
]

log = logging.getLogger(__name__)


@dataclass
class UiTrainTabParams:
    """``on_ui_train_tabs``: the txt2img preview parameters of the Train tab."""

    txt2img_preview_params: Any


@dataclass
class ImageGridLoopParams:
    """``on_image_grid``: the pictures of a grid and its layout; all three are read back."""

    imgs: list
    cols: int
    rows: int


@dataclass
class BeforeTokenCounterParams:
    """``on_before_token_counter``: the prompt the UI is about to count tokens of; ``prompt`` is read back."""

    prompt: str
    steps: int
    styles: list
    is_positive: bool = True


@dataclass
class ScriptCallback:
    """One registered callback: the file that registered it, the function, its unique name and extension."""

    script: str
    callback: Callable[..., Any]
    name: str = ""
    extension: str = ""
    metadata: Any = field(default=None, repr=False)


@dataclass(frozen=True)
class CallbackOwner:
    """Who registers callbacks while a script file is executed: its extension (name, metadata) and path."""

    extension: str
    filename: str
    metadata: Any = None


CATEGORIES = (
    "app_started", "model_loaded", "ui_tabs", "ui_train_tabs", "ui_settings", "before_image_saved", "image_saved",
    "extra_noise", "cfg_denoiser", "cfg_denoised", "cfg_after_cfg", "before_component", "after_component",
    "image_grid", "infotext_pasted", "script_unloaded", "before_ui", "on_reload", "list_optimizers", "list_unets",
    "before_token_counter",
)
REVERSED_CATEGORIES = frozenset({"script_unloaded", "before_ui"})
"""Run last-registered first, as A1111 does (undo in reverse order)."""

callback_map: dict[str, list[ScriptCallback]] = {f"callbacks_{category}": [] for category in CATEGORIES}
"""A1111's table, keyed ``callbacks_<category>``."""

_ordered_cache: dict[str, list[ScriptCallback]] = {}
_current_owner: CallbackOwner | None = None
_owners_by_file: dict[str, CallbackOwner] = {}


# --- owners --------------------------------------------------------------------------------------------------------

@contextmanager
def loading_script(owner: CallbackOwner) -> Iterator[None]:
    """While a script file runs, callbacks it registers belong to ``owner`` (later ones too, found by file)."""
    global _current_owner
    previous = _current_owner
    _current_owner = owner
    _owners_by_file[os.path.abspath(owner.filename)] = owner
    try:
        yield
    finally:
        _current_owner = previous


def _caller_file() -> str:
    """The first file on the stack outside this module (who called ``on_*`` / ``remove_*``)."""
    frame = sys._getframe(1)
    here = os.path.abspath(__file__)
    while frame is not None and os.path.abspath(frame.f_code.co_filename) == here:
        frame = frame.f_back
    return os.path.abspath(frame.f_code.co_filename) if frame is not None else "<unknown>"


def _owner() -> CallbackOwner:
    if _current_owner is not None:
        return _current_owner
    file = _caller_file()
    return _owners_by_file.get(file) or CallbackOwner(extension="", filename=file)


# --- registry ------------------------------------------------------------------------------------------------------

def add_callback(category: str, callback: Callable[..., Any], *, name: str | None = None) -> ScriptCallback:
    """Register ``callback`` under ``category`` (one of :data:`CATEGORIES`); returns its entry."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown callback category {category!r}; valid: {', '.join(CATEGORIES)}")
    if not callable(callback):
        raise TypeError(f"{category} callback must be callable, got {type(callback).__name__}")
    owner = _owner()
    base = f"{owner.extension or 'atelier'}/{os.path.basename(owner.filename)}/{category}"
    unique = f"{base}/{name}" if name else base
    entries = callback_map[f"callbacks_{category}"]
    taken = {c.name for c in entries}
    candidate, n = unique, 2
    while candidate in taken:
        candidate, n = f"{unique}-{n}", n + 1
    entry = ScriptCallback(owner.filename, callback, candidate, owner.extension, owner.metadata)
    entries.append(entry)
    _ordered_cache.pop(category, None)
    return entry


def _callback_names(cb: ScriptCallback) -> list[str]:
    parts = cb.name.split("/")
    return [cb.name.lower(), "/".join(parts[:2]).lower(), *([cb.extension] if cb.extension else [])]


def _metadata_refs(cb: ScriptCallback, key: str) -> list[str]:
    return cb.metadata.callback_order(cb.name, key) if cb.metadata is not None else []


def ordered_callbacks(category: str) -> list[ScriptCallback]:
    """The category's callbacks in calling order (registration order adjusted by metadata.ini Before/After)."""
    cached = _ordered_cache.get(category)
    if cached is None:
        from modules.extensions import dependency_order

        entries = callback_map[f"callbacks_{category}"]
        cached = dependency_order(entries, _callback_names, lambda c: _metadata_refs(c, "after"),
                                  lambda c: _metadata_refs(c, "before"), what="callback")
        _ordered_cache[category] = cached
    return cached


def remove_callbacks_for_script(filename: str) -> None:
    """Drop every callback registered by that file."""
    target = os.path.abspath(filename)
    for category in CATEGORIES:
        entries = callback_map[f"callbacks_{category}"]
        entries[:] = [c for c in entries if os.path.abspath(c.script) != target]
    _ordered_cache.clear()


def remove_current_script_callbacks() -> None:
    """Drop the callbacks of the script that calls this (or of the script being loaded)."""
    remove_callbacks_for_script(_current_owner.filename if _current_owner is not None else _caller_file())


def remove_callbacks_for_function(callback_func: Callable[..., Any]) -> None:
    for category in CATEGORIES:
        entries = callback_map[f"callbacks_{category}"]
        entries[:] = [c for c in entries if c.callback != callback_func]
    _ordered_cache.clear()


def clear_callbacks() -> None:
    """Forget every callback (before scripts are reloaded, and between tests)."""
    for entries in callback_map.values():
        entries.clear()
    _ordered_cache.clear()
    _owners_by_file.clear()


# --- calling -----------------------------------------------------------------------------------------------------

def _report(category: str, cb: ScriptCallback) -> None:
    where = f"extension {cb.extension}" if cb.extension else cb.script
    log.exception("Error in %s callback %s (%s); the other callbacks still run.", category, cb.name, where)


def _each(category: str) -> Iterator[ScriptCallback]:
    entries = ordered_callbacks(category)
    yield from (reversed(entries) if category in REVERSED_CATEGORIES else list(entries))


def _run(category: str, *args: Any, **kwargs: Any) -> None:
    for cb in _each(category):
        try:
            cb.callback(*args, **kwargs)
        except Exception:
            _report(category, cb)


def app_started_callback(demo: Any, app: Any) -> None:
    _run("app_started", demo, app)


def app_reload_callback() -> None:
    _run("on_reload")


def model_loaded_callback(sd_model: Any) -> None:
    _run("model_loaded", sd_model)


def ui_tabs_with_owners() -> list[tuple[str, Any]]:
    """``(extension name, (gr.Blocks, title, elem_id))`` for every tab of the ``on_ui_tabs`` callbacks."""
    tabs: list[tuple[str, Any]] = []
    for cb in _each("ui_tabs"):
        try:
            tabs += [(cb.extension, entry) for entry in (cb.callback() or [])]
        except Exception:
            _report("ui_tabs", cb)
    return tabs


def ui_tabs_callback() -> list:
    """Tabs from ``on_ui_tabs`` callbacks: each returns a list of ``(gr.Blocks, title, elem_id)``."""
    return [entry for _, entry in ui_tabs_with_owners()]


def ui_train_tabs_callback(params: UiTrainTabParams) -> None:
    _run("ui_train_tabs", params)


def ui_settings_callback() -> None:
    _run("ui_settings")


def before_image_saved_callback(params: ImageSaveParams) -> None:
    _run("before_image_saved", params)


def image_saved_callback(params: ImageSaveParams) -> None:
    _run("image_saved", params)


def extra_noise_callback(params: ExtraNoiseParams) -> None:
    _run("extra_noise", params)


def cfg_denoiser_callback(params: CFGDenoiserParams) -> None:
    _run("cfg_denoiser", params)


def cfg_denoised_callback(params: CFGDenoisedParams) -> None:
    _run("cfg_denoised", params)


def cfg_after_cfg_callback(params: AfterCFGCallbackParams) -> None:
    _run("cfg_after_cfg", params)


def before_component_callback(component: Any, **kwargs: Any) -> None:
    _run("before_component", component, **kwargs)


def after_component_callback(component: Any, **kwargs: Any) -> None:
    _run("after_component", component, **kwargs)


def image_grid_callback(params: ImageGridLoopParams) -> None:
    _run("image_grid", params)


def infotext_pasted_callback(infotext: str, params: dict[str, Any]) -> None:
    _run("infotext_pasted", infotext, params)


def script_unloaded_callback() -> None:
    _run("script_unloaded")


def before_ui_callback() -> None:
    _run("before_ui")


def list_optimizers_callback() -> list:
    """Optimizers extensions offer: each callback appends to the list it is given."""
    found: list = []
    _run("list_optimizers", found)
    return found


def list_unets_callback() -> list:
    found: list = []
    _run("list_unets", found)
    return found


def before_token_counter_callback(params: BeforeTokenCounterParams) -> None:
    _run("before_token_counter", params)


# --- registration (A1111's public names) ---------------------------------------------------------------------------

def on_app_started(callback: Callable[[Any, Any], None], *, name: str | None = None) -> None:
    """``callback(demo, app)`` once the server runs (demo is None without the UI); add HTTP routes here."""
    add_callback("app_started", callback, name=name)


def on_before_reload(callback: Callable[[], None], *, name: str | None = None) -> None:
    """``callback()`` before the UI is reloaded."""
    add_callback("on_reload", callback, name=name)


def on_model_loaded(callback: Callable[[Any], None], *, name: str | None = None) -> None:
    """``callback(sd_model)`` after a checkpoint is loaded."""
    add_callback("model_loaded", callback, name=name)


def on_ui_tabs(callback: Callable[[], list], *, name: str | None = None) -> None:
    """``callback()`` returns ``[(gr.Blocks, title, elem_id), ...]``: extra top-level tabs."""
    add_callback("ui_tabs", callback, name=name)


def on_ui_train_tabs(callback: Callable[[UiTrainTabParams], None], *, name: str | None = None) -> None:
    add_callback("ui_train_tabs", callback, name=name)


def on_ui_settings(callback: Callable[[], None], *, name: str | None = None) -> None:
    """``callback()`` while settings are built; call ``shared.opts.add_option(...)`` there."""
    add_callback("ui_settings", callback, name=name)


def on_before_image_saved(callback: Callable[[ImageSaveParams], None], *, name: str | None = None) -> None:
    """``callback(ImageSaveParams)`` before a picture is written; image, filename and pnginfo may be changed."""
    add_callback("before_image_saved", callback, name=name)


def on_image_saved(callback: Callable[[ImageSaveParams], None], *, name: str | None = None) -> None:
    """``callback(ImageSaveParams)`` after a picture is written."""
    add_callback("image_saved", callback, name=name)


def on_extra_noise(callback: Callable[[ExtraNoiseParams], None], *, name: str | None = None) -> None:
    """``callback(ExtraNoiseParams)`` before img2img's extra noise is added; ``noise`` is read back."""
    add_callback("extra_noise", callback, name=name)


def on_cfg_denoiser(callback: Callable[[CFGDenoiserParams], None], *, name: str | None = None) -> None:
    """``callback(CFGDenoiserParams)`` before each model call; x, image_cond, sigma, text_cond/uncond read back."""
    add_callback("cfg_denoiser", callback, name=name)


def on_cfg_denoised(callback: Callable[[CFGDenoisedParams], None], *, name: str | None = None) -> None:
    """``callback(CFGDenoisedParams)`` after the model call, before guidance is combined."""
    add_callback("cfg_denoised", callback, name=name)


def on_cfg_after_cfg(callback: Callable[[AfterCFGCallbackParams], None], *, name: str | None = None) -> None:
    """``callback(AfterCFGCallbackParams)`` after guidance; ``x`` is read back."""
    add_callback("cfg_after_cfg", callback, name=name)


def on_before_component(callback: Callable[..., None], *, name: str | None = None) -> None:
    """``callback(component, **kwargs)`` before every Gradio component is created."""
    add_callback("before_component", callback, name=name)


def on_after_component(callback: Callable[..., None], *, name: str | None = None) -> None:
    """``callback(component, **kwargs)`` after every Gradio component is created."""
    add_callback("after_component", callback, name=name)


def on_image_grid(callback: Callable[[ImageGridLoopParams], None], *, name: str | None = None) -> None:
    add_callback("image_grid", callback, name=name)


def on_infotext_pasted(callback: Callable[[str, dict], None], *, name: str | None = None) -> None:
    """``callback(infotext, params)`` after infotext is parsed; change ``params`` in place."""
    add_callback("infotext_pasted", callback, name=name)


def on_script_unloaded(callback: Callable[[], None], *, name: str | None = None) -> None:
    """``callback()`` before scripts are reloaded (last registered first): undo what the script changed."""
    add_callback("script_unloaded", callback, name=name)


def on_before_ui(callback: Callable[[], None], *, name: str | None = None) -> None:
    """``callback()`` before the UI is built (and in API-only start)."""
    add_callback("before_ui", callback, name=name)


def on_list_optimizers(callback: Callable[[list], None], *, name: str | None = None) -> None:
    add_callback("list_optimizers", callback, name=name)


def on_list_unets(callback: Callable[[list], None], *, name: str | None = None) -> None:
    add_callback("list_unets", callback, name=name)


def on_before_token_counter(callback: Callable[[BeforeTokenCounterParams], None], *, name: str | None = None) -> None:
    add_callback("before_token_counter", callback, name=name)
