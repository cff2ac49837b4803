"""A1111's ``modules.scripts``: the ``Script`` base class, loading ``scripts/*.py`` files, and ``ScriptRunner``.

Script files come from the repository's ``scripts/`` folder and from each active extension's ``scripts/`` folder,
ordered by ``metadata.ini`` (``[scripts/<file>]`` / ``[scripts]`` Requires/Before/After). While a file runs, its
extension folder is first on ``sys.path`` and :func:`basedir` returns it. A file that fails is logged with its
extension's name and skipped.

A ``ScriptRunner`` (one for txt2img, one for img2img) holds the script instances of its tab. Each script's
``ui()`` components are appended to one flat ``inputs`` list (``inputs[0]`` is the "Script" dropdown), so the
script sees its own slice ``p.script_args[args_from:args_to]`` in every hook. Always-on hooks are dispatched to
the scripts that override them; one that raises is logged with its extension and script name and the generation
goes on. The API builds ``p.script_args`` from ``script_name``/``script_args``/``alwayson_scripts`` with
:func:`build_script_args` and lists the scripts with :func:`script_info`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import sys
import threading
import traceback
from collections import namedtuple
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modules import script_callbacks
from modules.errors import InvalidRequest
from modules.extensions import Extension, dependency_order
from modules.paths import ROOT
from modules.processing_hooks import (  # noqa: F401  (A1111's names, re-exported for scripts)
    MaskBlendArgs,
    PostprocessBatchListArgs,
    PostprocessImageArgs,
    PostProcessMaskOverlayArgs,
    PostSampleArgs,
)

log = logging.getLogger(__name__)

AlwaysVisible = object()
"""Returned by ``Script.show`` for a script that is always on (its UI is shown, its hooks always run)."""

BUILTIN_SCRIPTS_DIR = ROOT / "scripts"


@dataclass
class OnComponent:
    """What a targeted ``on_before_component``/``on_after_component`` callback receives."""

    component: Any


class ScriptArgsError(InvalidRequest, ValueError):
    """A request names an unknown script or passes always-on arguments to a selectable one (HTTP 422)."""


class Script:
    """Base class of txt2img/img2img scripts. Override ``title`` and whichever hooks you need; every hook receives
    ``p`` and then the values of the components your ``ui()`` returned (``*args``)."""

    name: str | None = None
    section: str | None = None
    filename: str | None = None
    args_from: int | None = None
    args_to: int | None = None
    alwayson: bool = False
    is_txt2img: bool = False
    is_img2img: bool = False
    tabname: str | None = None
    group: Any = None
    create_group: bool = True
    sorting_priority: int = 0
    infotext_fields: list | None = None
    """``(component, infotext label or function)`` pairs: pasting infotext fills these components."""
    paste_field_names: list | None = None
    api_info: dict | None = None
    on_before_component_elem_id: list | None = None
    on_after_component_elem_id: list | None = None
    setup_for_ui_only: bool = False
    """Skip ``setup`` for API requests."""
    controls: list | None = None

    def title(self) -> str:
        """The name shown in the Script dropdown and used by the API (case-insensitively)."""
        raise NotImplementedError()

    def show(self, is_img2img: bool) -> Any:
        """False: hidden in this tab; True: a choice in the Script dropdown; ``AlwaysVisible``: always on."""
        return True

    def ui(self, is_img2img: bool) -> Any:
        """Create and return the Gradio components whose values become this script's ``*args``."""

    def run(self, p: Any, *args: Any) -> Any:
        """Selectable scripts: do the whole generation and return a ``Processed`` (usually ``process_images(p)``)."""

    def setup(self, p: Any, *args: Any) -> None:
        """When ``p`` receives its scripts and arguments, before anything else."""

    def before_process(self, p: Any, *args: Any) -> None:
        """First hook of ``process_images``, before settings overrides are applied."""

    def process(self, p: Any, *args: Any) -> None:
        """After seeds and prompts are set, before the model is prepared."""

    def before_process_batch(self, p: Any, *args: Any, **kwargs: Any) -> None:
        """Per batch, before extra networks are parsed (kwargs: batch_number, prompts, seeds, subseeds)."""

    def after_extra_networks_activate(self, p: Any, *args: Any, **kwargs: Any) -> None:
        """Per batch, after LoRA and other extra networks are active (kwargs add ``extra_network_data``)."""

    def process_batch(self, p: Any, *args: Any, **kwargs: Any) -> None:
        """Per batch, before conditioning (kwargs: batch_number, prompts, seeds, subseeds)."""

    def process_before_every_sampling(self, p: Any, *args: Any, **kwargs: Any) -> None:
        """Before each sampling run (again for the hires pass); kwargs: x, noise, c, uc."""

    def post_sample(self, p: Any, ps: PostSampleArgs, *args: Any) -> None:
        """After sampling, before the VAE decodes ``ps.samples`` (which may be replaced)."""

    def on_mask_blend(self, p: Any, mba: MaskBlendArgs, *args: Any) -> None:
        """Inpainting: the latent blend of result and original; ``mba.blended_latent`` may be replaced."""

    def postprocess_batch(self, p: Any, *args: Any, **kwargs: Any) -> None:
        """After decoding a batch (kwargs: images as a tensor, batch_number)."""

    def postprocess_batch_list(self, p: Any, pp: PostprocessBatchListArgs, *args: Any, **kwargs: Any) -> None:
        """After decoding a batch; ``pp.images`` may be replaced or extended (kwargs: batch_number)."""

    def postprocess_image(self, p: Any, pp: PostprocessImageArgs, *args: Any) -> None:
        """Each finished picture before saving; ``pp.image`` may be replaced."""

    def postprocess_maskoverlay(self, p: Any, ppmo: PostProcessMaskOverlayArgs, *args: Any) -> None:
        """Inpainting: the mask and overlay used to paste the result back."""

    def postprocess_image_after_composite(self, p: Any, pp: PostprocessImageArgs, *args: Any) -> None:
        """Each picture after the inpainting overlay; ``pp.image`` may be replaced."""

    def before_hr(self, p: Any, *args: Any) -> None:
        """Before the hires-fix second pass."""

    def postprocess(self, p: Any, processed: Any, *args: Any) -> None:
        """After the whole job; ``processed`` is the result."""

    def before_component(self, component: Any, **kwargs: Any) -> None:
        """Before any Gradio component of the page is created."""

    def after_component(self, component: Any, **kwargs: Any) -> None:
        """After any Gradio component of the page is created."""

    def on_before_component(self, callback: Callable[[OnComponent], None], *, elem_id: str) -> None:
        """Call ``callback(OnComponent)`` before the component with that ``elem_id`` is created."""
        if self.on_before_component_elem_id is None:
            self.on_before_component_elem_id = []
        self.on_before_component_elem_id.append((elem_id, callback))

    def on_after_component(self, callback: Callable[[OnComponent], None], *, elem_id: str) -> None:
        """Call ``callback(OnComponent)`` after the component with that ``elem_id`` is created."""
        if self.on_after_component_elem_id is None:
            self.on_after_component_elem_id = []
        self.on_after_component_elem_id.append((elem_id, callback))

    def describe(self) -> str:
        return ""

    def elem_id(self, item_id: str) -> str:
        """``script_[txt2img_|img2img_]<title slug>_<item_id>``: the tab part only when the script is on both tabs."""
        on_both = self.show(True) == self.show(False)
        tab = f"{'img2img' if self.is_img2img else 'txt2img'}_" if on_both else ""
        slug = re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", self.title().lower()))
        return f"script_{tab}{slug}_{item_id}"


# --- loading -----------------------------------------------------------------------------------------------------

ScriptFile = namedtuple("ScriptFile", ["basedir", "filename", "path"])
ScriptClassData = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])


@dataclass(frozen=True)
class ScriptSource:
    """One ``scripts/*.py`` file and the extension it belongs to (``None``: the repository's own scripts)."""

    extension: Extension | None
    basedir: str
    path: str

    @property
    def label(self) -> str:
        return f"extension {self.extension.name}" if self.extension else "built-in scripts"

    @property
    def names(self) -> list[str]:
        file = os.path.basename(self.path).lower()
        if self.extension is None:
            return [f"builtin/{file}"]
        prefix = "builtin/" if self.extension.is_builtin else ""
        return [f"{self.extension.name}/{file}", f"{prefix}{self.extension.name}/{file}", self.extension.name]

    def order(self, key: str) -> list[str]:
        if self.extension is None:
            return []
        return self.extension.metadata.script_order(os.path.basename(self.path).lower(), key)


@dataclass(frozen=True)
class ScriptLoadError:
    extension: str
    path: str
    message: str


current_basedir = str(ROOT)
scripts_data: list[ScriptClassData] = []
postprocessing_scripts_data: list = []
load_errors: list[ScriptLoadError] = []
script_extension: dict[str, str] = {}
"""Script file path -> extension name (absent for the repository's own scripts)."""
scripts_txt2img: ScriptRunner | None = None
scripts_img2img: ScriptRunner | None = None
scripts_current: ScriptRunner | None = None
_layout_lock = threading.Lock()


def basedir() -> str:
    """The extension folder of the script file being loaded (else the repository root); call it at import time."""
    return current_basedir


def list_script_sources(exts: Iterable[Extension], builtin_scripts_dir: str | os.PathLike[str] | None = None
                        ) -> list[ScriptSource]:
    """The repository's ``scripts/*.py``, then each active extension's, ordered by metadata.ini."""
    sources: list[ScriptSource] = []
    root_dir = Path(BUILTIN_SCRIPTS_DIR if builtin_scripts_dir is None else builtin_scripts_dir)
    if root_dir.is_dir():
        sources += [ScriptSource(None, str(ROOT), str(f)) for f in sorted(root_dir.glob("*.py")) if f.is_file()]
    for ext in exts:
        if not ext.active:
            continue
        sources += [ScriptSource(ext, ext.path, str(f)) for f in ext.list_files("scripts", ".py")]
    for source in sources:
        for requirement in source.order("requires"):
            if not any(alt in other.names for alt in requirement.split("|") for other in sources):
                log.warning("%s: script %s requires %s, which is not loaded.", source.label,
                            os.path.basename(source.path), requirement.replace("|", " or "))
    return dependency_order(sources, lambda s: s.names, lambda s: [*s.order("requires"), *s.order("after")],
                            lambda s: s.order("before"), what="script")


def list_scripts(scriptdirname: str, extension: str, *, include_extensions: bool = True,
                 exts: Iterable[Extension] | None = None) -> list[ScriptFile]:
    """A1111's helper: ``<repo>/<scriptdirname>/*<extension>`` and the same in each active extension."""
    from modules import extensions as extensions_module

    found: list[ScriptFile] = []
    root_dir = ROOT / scriptdirname
    if root_dir.is_dir():
        found += [ScriptFile(str(ROOT), f.name, str(f)) for f in sorted(root_dir.iterdir())
                  if f.is_file() and f.name.lower().endswith(extension)]
    if include_extensions:
        for ext in extensions_module.active(exts):
            found += [ScriptFile(ext.path, f.name, str(f)) for f in ext.list_files(scriptdirname, extension)]
    return found


def _exec_script_file(source: ScriptSource) -> Any:
    """Run one script file as a fresh module, with its extension folder on ``sys.path``."""
    global current_basedir
    saved_path = list(sys.path)
    if source.basedir != str(ROOT):
        sys.path.insert(0, source.basedir)
    current_basedir = source.basedir
    owner = script_callbacks.CallbackOwner(source.extension.name if source.extension else "builtin", source.path,
                                           source.extension.metadata if source.extension else None)
    script_callbacks.remove_callbacks_for_script(source.path)  # loading a file again must not register twice
    try:
        with script_callbacks.loading_script(owner):
            spec = importlib.util.spec_from_file_location(os.path.basename(source.path), source.path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        return module
    finally:
        sys.path[:] = saved_path
        current_basedir = str(ROOT)


def load_scripts(exts: Iterable[Extension] = (), builtin_scripts_dir: str | os.PathLike[str] | None = None
                 ) -> list[ScriptClassData]:
    """Execute every script file, collect its ``Script`` subclasses and make fresh txt2img/img2img runners."""
    global scripts_data, load_errors, scripts_txt2img, scripts_img2img
    found: list[ScriptClassData] = []
    errors: list[ScriptLoadError] = []
    owners: dict[str, str] = {}
    for source in list_script_sources(exts, builtin_scripts_dir):
        try:
            module = _exec_script_file(source)
        except Exception as e:
            log.exception("%s: script %s could not be loaded; it is skipped.", source.label.capitalize(),
                          os.path.basename(source.path))
            message = "".join(traceback.format_exception_only(type(e), e)).strip()
            errors.append(ScriptLoadError(source.extension.name if source.extension else "", source.path, message))
            script_callbacks.remove_callbacks_for_script(source.path)
            continue
        if source.extension is not None:
            owners[source.path] = source.extension.name
        for value in list(vars(module).values()):
            if isinstance(value, type) and issubclass(value, Script) and value.__module__ == module.__name__:
                found.append(ScriptClassData(value, source.path, source.basedir, module))
    scripts_data, load_errors = found, errors
    script_extension.clear()
    script_extension.update(owners)
    scripts_txt2img, scripts_img2img = ScriptRunner(), ScriptRunner()
    scripts_txt2img.initialize_scripts(is_img2img=False)
    scripts_img2img.initialize_scripts(is_img2img=True)
    return found


def reload_scripts(exts: Iterable[Extension] = (), builtin_scripts_dir: str | os.PathLike[str] | None = None
                   ) -> list[ScriptClassData]:
    """Tell scripts they are unloaded, forget every callback, and load the script files again."""
    script_callbacks.script_unloaded_callback()
    script_callbacks.clear_callbacks()
    return load_scripts(exts, builtin_scripts_dir)


def describe_script(script: Script) -> str:
    """``extension X, script "Title" (file.py)`` for log messages."""
    path = script.filename or ""
    owner = script_extension.get(path)
    try:
        title = script.title()
    except Exception:
        title = type(script).__name__
    where = f"extension {owner}" if owner else "built-in"
    return f'{where}, script "{title}" ({os.path.basename(path)})'


# --- runner ------------------------------------------------------------------------------------------------------

def _overrides(script: Script, method: str) -> bool:
    return getattr(type(script), method, None) is not getattr(Script, method)


class ScriptRunner:
    """The scripts of one tab (txt2img or img2img): their UI arguments and hook dispatch."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.scripts: list[Script] = []
        self.selectable_scripts: list[Script] = []
        self.alwayson_scripts: list[Script] = []
        self.titles: list[str] = []
        self.title_map: dict[str, Script] = {}
        self.infotext_fields: list = []
        self.paste_field_names: list = []
        self.inputs: list = [None]
        self.is_img2img = False
        self.ui_created = False
        self.dropdown: Any = None
        self.on_before_component_elem_id: dict[str, list] = {}
        self.on_after_component_elem_id: dict[str, list] = {}

    def initialize_scripts(self, is_img2img: bool, data: Sequence[ScriptClassData] | None = None) -> None:
        """Instantiate every loaded script class and sort it into always-on, selectable or hidden for this tab."""
        self._reset()
        self.is_img2img = is_img2img
        for entry in scripts_data if data is None else data:
            try:
                script = entry.script_class()
                script.filename = entry.path
                script.is_txt2img, script.is_img2img = not is_img2img, is_img2img
                script.tabname = "img2img" if is_img2img else "txt2img"
                visibility = script.show(is_img2img)
                script.name = str(script.title()).lower()
            except Exception:
                log.exception("Script class %s of %s could not be set up; it is skipped.",
                              entry.script_class.__name__, entry.path)
                continue
            if visibility is AlwaysVisible:
                script.alwayson = True
                self.alwayson_scripts.append(script)
            elif visibility:
                script.alwayson = False
                self.selectable_scripts.append(script)
        self.scripts = [*self.alwayson_scripts, *self.selectable_scripts]
        self.titles = [s.title() for s in self.selectable_scripts]
        self.title_map = {s.name: s for s in self.scripts}
        self._collect_component_callbacks()

    def _collect_component_callbacks(self) -> None:
        self.on_before_component_elem_id, self.on_after_component_elem_id = {}, {}
        for script in self.scripts:
            for elem_id, callback in script.on_before_component_elem_id or []:
                self.on_before_component_elem_id.setdefault(elem_id, []).append((callback, script))
            for elem_id, callback in script.on_after_component_elem_id or []:
                self.on_after_component_elem_id.setdefault(elem_id, []).append((callback, script))

    # UI ---------------------------------------------------------------------------------------------------------
    def _create_script_ui(self, script: Script) -> None:
        script.args_from = script.args_to = len(self.inputs)
        try:
            controls = script.ui(script.is_img2img)
        except Exception:
            log.exception("%s: ui() failed; the script runs without controls.", describe_script(script))
            controls = None
        if controls is None:
            controls = []
        elif not isinstance(controls, list | tuple):
            controls = [controls]
        script.controls = list(controls)
        for control in script.controls:
            control.custom_script_source = os.path.basename(script.filename or "")
        script.api_info = {"name": script.name, "is_img2img": script.is_img2img, "is_alwayson": script.alwayson,
                           "args": [_api_arg(c) for c in script.controls]}
        self.infotext_fields += script.infotext_fields or []
        self.paste_field_names += script.paste_field_names or []
        self.inputs += script.controls
        script.args_to = len(self.inputs)

    def setup_ui(self) -> list:
        """Build every script's controls inside the current ``gr.Blocks``, always-on first, then the "Script"
        dropdown ("None" + selectable titles, index-valued) and each selectable script's hidden group."""
        import gradio as gr

        self.inputs, self.infotext_fields, self.paste_field_names = [None], [], []
        self._collect_component_callbacks()
        for script in self.alwayson_scripts:
            if script.create_group:
                with gr.Group(visible=True) as group:
                    self._create_script_ui(script)
                script.group = group
            else:
                self._create_script_ui(script)
        tab = "img2img" if self.is_img2img else "txt2img"
        self.dropdown = gr.Dropdown(label="Script", elem_id=f"{tab}_script_dropdown", choices=["None", *self.titles],
                                    value="None", type="index")
        self.inputs[0] = self.dropdown
        for script in self.selectable_scripts:
            with gr.Group(visible=False) as group:
                self._create_script_ui(script)
            script.group = group
        groups = [s.group for s in self.selectable_scripts]
        if groups:
            def show_selected(index: int | None) -> list:
                return [gr.update(visible=(i + 1 == index)) for i in range(len(groups))]

            self.dropdown.change(fn=show_selected, inputs=[self.dropdown], outputs=groups)
        self.ui_created = True
        return self.inputs

    def ensure_layout(self) -> None:
        """Give every script its ``args_from``/``args_to`` and API info without a page: build the controls inside
        a throw-away ``gr.Blocks`` (as A1111's API does) unless the UI already did."""
        with _layout_lock:
            if self.ui_created:
                return
            import gradio as gr

            with gr.Blocks():
                self.setup_ui()

    def default_script_args(self) -> list:
        """The values of every control as created (``[0]``: no selectable script), the API's starting point."""
        self.ensure_layout()
        return [0, *(_control_default(c) for c in self.inputs[1:])]

    def before_component(self, component: Any, **kwargs: Any) -> None:
        for callback, script in self.on_before_component_elem_id.get(kwargs.get("elem_id"), []):
            self._guard(script, "on_before_component", lambda cb=callback: cb(OnComponent(component)))
        for script in self.scripts:
            self._guard(script, "before_component", lambda s=script: s.before_component(component, **kwargs))

    def after_component(self, component: Any, **kwargs: Any) -> None:
        for callback, script in self.on_after_component_elem_id.get(kwargs.get("elem_id"), []):
            self._guard(script, "on_after_component", lambda cb=callback: cb(OnComponent(component)))
        for script in self.scripts:
            self._guard(script, "after_component", lambda s=script: s.after_component(component, **kwargs))

    # running ----------------------------------------------------------------------------------------------------
    def run(self, p: Any, *args: Any) -> Any:
        """Run the selectable script chosen by ``args[0]`` (its 1-based index or title); None when "None"."""
        choice = args[0] if args else 0
        if isinstance(choice, str):
            script = self.title_map.get(choice.lower())
        else:
            script = self.selectable_scripts[choice - 1] if choice and 0 < choice <= len(self.selectable_scripts) \
                else None
        if script is None or script.alwayson:
            return None
        return script.run(p, *args[script.args_from:script.args_to])

    @staticmethod
    def _guard(script: Script, method: str, call: Callable[[], Any], *, refuse: bool = False) -> None:
        try:
            call()
        except Exception as e:
            if refuse and isinstance(e, InvalidRequest):
                raise
            log.exception("Error in %s, %s(); generation continues without it.", describe_script(script), method)

    def _each(self, p: Any, method: str) -> Iterable[tuple[Script, list]]:
        values = list(getattr(p, "script_args", None) or [])
        for script in self.alwayson_scripts:
            if _overrides(script, method):
                start, end = script.args_from or 0, script.args_to or 0
                yield script, values[start:end]

    def _dispatch(self, p: Any, method: str, call: Callable[[Script, list], Any]) -> None:
        for script, args in self._each(p, method):
            self._guard(script, method, lambda s=script, a=args: call(s, a))

    def setup_scrips(self, p: Any, *, is_ui: bool = True) -> None:
        """``setup`` of every always-on script (A1111's spelling); API requests skip ``setup_for_ui_only`` ones.

        ``setup`` runs while the request is prepared, before it is queued: a script that raises ``InvalidRequest``
        there refuses the request (HTTP 422, or the UI's error message); any other failure is logged and the job runs
        without that script, as for every other hook."""
        for script, args in self._each(p, "setup"):
            if is_ui or not script.setup_for_ui_only:
                self._guard(script, "setup", lambda s=script, a=args: s.setup(p, *a), refuse=True)

    setup_scripts = setup_scrips

    def before_process(self, p: Any) -> None:
        self._dispatch(p, "before_process", lambda s, a: s.before_process(p, *a))

    def process(self, p: Any) -> None:
        self._dispatch(p, "process", lambda s, a: s.process(p, *a))

    def before_process_batch(self, p: Any, **kwargs: Any) -> None:
        self._dispatch(p, "before_process_batch", lambda s, a: s.before_process_batch(p, *a, **kwargs))

    def after_extra_networks_activate(self, p: Any, **kwargs: Any) -> None:
        self._dispatch(p, "after_extra_networks_activate",
                       lambda s, a: s.after_extra_networks_activate(p, *a, **kwargs))

    def process_batch(self, p: Any, **kwargs: Any) -> None:
        self._dispatch(p, "process_batch", lambda s, a: s.process_batch(p, *a, **kwargs))

    def process_before_every_sampling(self, p: Any, **kwargs: Any) -> None:
        self._dispatch(p, "process_before_every_sampling",
                       lambda s, a: s.process_before_every_sampling(p, *a, **kwargs))

    def post_sample(self, p: Any, ps: PostSampleArgs) -> None:
        self._dispatch(p, "post_sample", lambda s, a: s.post_sample(p, ps, *a))

    def on_mask_blend(self, p: Any, mba: MaskBlendArgs) -> None:
        self._dispatch(p, "on_mask_blend", lambda s, a: s.on_mask_blend(p, mba, *a))

    def postprocess_batch(self, p: Any, images: Any, **kwargs: Any) -> None:
        self._dispatch(p, "postprocess_batch", lambda s, a: s.postprocess_batch(p, *a, images=images, **kwargs))

    def postprocess_batch_list(self, p: Any, pp: PostprocessBatchListArgs, **kwargs: Any) -> None:
        self._dispatch(p, "postprocess_batch_list", lambda s, a: s.postprocess_batch_list(p, pp, *a, **kwargs))

    def postprocess_image(self, p: Any, pp: PostprocessImageArgs) -> None:
        self._dispatch(p, "postprocess_image", lambda s, a: s.postprocess_image(p, pp, *a))

    def postprocess_maskoverlay(self, p: Any, ppmo: PostProcessMaskOverlayArgs) -> None:
        self._dispatch(p, "postprocess_maskoverlay", lambda s, a: s.postprocess_maskoverlay(p, ppmo, *a))

    def postprocess_image_after_composite(self, p: Any, pp: PostprocessImageArgs) -> None:
        self._dispatch(p, "postprocess_image_after_composite",
                       lambda s, a: s.postprocess_image_after_composite(p, pp, *a))

    def before_hr(self, p: Any) -> None:
        self._dispatch(p, "before_hr", lambda s, a: s.before_hr(p, *a))

    def postprocess(self, p: Any, processed: Any) -> None:
        self._dispatch(p, "postprocess", lambda s, a: s.postprocess(p, processed, *a))


# --- API support -------------------------------------------------------------------------------------------------

def _choice_values(choices: Any) -> list | None:
    if choices is None:
        return None
    return [c[1] if isinstance(c, tuple | list) and len(c) == 2 else c for c in choices]


def _api_arg(control: Any) -> dict[str, Any]:
    """A1111's ``ScriptArg``: what a client needs to fill one positional argument."""
    return {"label": getattr(control, "label", None), "value": _control_default(control),
            "minimum": getattr(control, "minimum", None), "maximum": getattr(control, "maximum", None),
            "step": getattr(control, "step", None), "choices": _choice_values(getattr(control, "choices", None))}


def _control_default(control: Any) -> Any:
    """A control's initial value as a script receives it (index-typed choices give the index)."""
    value = getattr(control, "value", None)
    if getattr(control, "type", None) == "index" and getattr(control, "choices", None):
        values = _choice_values(control.choices)
        names = [c[0] if isinstance(c, tuple | list) else c for c in control.choices]
        for candidates in (values, names):
            if value in candidates:
                return candidates.index(value)
        return 0 if value is None else value
    return value


def script_info(runners: Sequence[ScriptRunner | None] | None = None) -> list[dict[str, Any]]:
    """``GET /sdapi/v1/script-info``: ``[{name, is_alwayson, is_img2img, args: [{label, value, minimum, maximum,
    step, choices}]}]`` for the txt2img then the img2img scripts."""
    found = []
    for runner in (scripts_txt2img, scripts_img2img) if runners is None else runners:
        if runner is None:
            continue
        runner.ensure_layout()
        found += [dict(s.api_info) for s in runner.scripts if s.api_info is not None]
    return found


def scripts_list() -> dict[str, list[str]]:
    """``GET /sdapi/v1/scripts``: the selectable scripts' (lower-case) names per tab."""
    return {tab: [s.name for s in runner.selectable_scripts] if runner else []
            for tab, runner in (("txt2img", scripts_txt2img), ("img2img", scripts_img2img))}


def _find_script(runner: ScriptRunner, title: str, *, alwayson: bool) -> Script:
    script = runner.title_map.get(str(title).lower())
    if script is None:
        pool = runner.alwayson_scripts if alwayson else runner.selectable_scripts
        valid = ", ".join(repr(s.name) for s in pool) or "none installed"
        kind = "always-on" if alwayson else "selectable"
        raise ScriptArgsError(f"There is no {kind} script named {title!r}; valid names: {valid}.",
                              "GET /sdapi/v1/script-info lists the scripts and their arguments.")
    if alwayson and not script.alwayson:
        raise ScriptArgsError(f"{title!r} is a selectable script; it cannot be given in alwayson_scripts.",
                              "Pass it as script_name with its arguments in script_args.")
    if not alwayson and script.alwayson:
        raise ScriptArgsError(f"{title!r} is an always-on script; it cannot be run as script_name.",
                              'Pass its arguments in alwayson_scripts: {"<name>": {"args": [...]}}.')
    return script


def _put_args(values: list, script: Script, args: Any, where: str) -> None:
    if not isinstance(args, list | tuple):
        raise ScriptArgsError(f"The arguments of {where} must be a list, got {type(args).__name__}.",
                              "Arguments are positional, in the order GET /sdapi/v1/script-info lists them.")
    slots = (script.args_to or 0) - (script.args_from or 0)
    if len(args) > slots:
        log.warning("%s got %d arguments but takes %d; the extra ones are ignored.", where, len(args), slots)
    for i, value in enumerate(list(args)[:slots]):
        values[script.args_from + i] = value


def build_script_args(runner: ScriptRunner, *, script_name: str | None = None, script_args: Sequence[Any] = (),
                      alwayson_scripts: dict[str, Any] | None = None) -> tuple[Script | None, list]:
    """(selected script or None, ``p.script_args``) for an API request: every control's default, overwritten
    positionally by ``script_args`` (for ``script_name``) and each ``alwayson_scripts[title]["args"]``.

    Titles match case-insensitively. Raises :class:`ScriptArgsError` (a ValueError, HTTP 422) for unknown titles
    (the message lists the valid ones) and for a script given in the wrong place.
    """
    values = runner.default_script_args()
    selected = None
    if script_name:
        selected = _find_script(runner, script_name, alwayson=False)
        values[0] = runner.selectable_scripts.index(selected) + 1
        _put_args(values, selected, list(script_args or []), f"script {script_name!r}")
    for title, entry in (alwayson_scripts or {}).items():
        script = _find_script(runner, title, alwayson=True)
        if not isinstance(entry, dict):
            raise ScriptArgsError(f'alwayson_scripts[{title!r}] must be an object like {{"args": [...]}}.',
                                  "Send the script's arguments under the key args.")
        if "args" in entry:
            _put_args(values, script, entry["args"], f"always-on script {title!r}")
    return selected, values


def process_with_scripts(p: Any) -> Any:
    """A selected script's ``run`` (A1111's ``ScriptRunner.run``), else plain ``process_images`` (UI and API jobs)."""
    from modules.processing import process_images

    runner = getattr(p, "scripts", None)
    if runner is not None and hasattr(runner, "run") and p.script_args:
        processed = runner.run(p, *p.script_args)
        if processed is not None:
            return processed
    return process_images(p)


def prepare_api_request(p: Any, kind: str, req: Any) -> None:
    """``ApiContext.prepare_scripts``: mark ``p`` as an API job, then attach the tab's runner (``kind`` is
    "txt2img" or "img2img") and the script arguments of the request (``script_name``, ``script_args``,
    ``alwayson_scripts``). Raises :class:`ScriptArgsError` for a bad request."""
    runner = scripts_img2img if kind == "img2img" else scripts_txt2img
    script_name = getattr(req, "script_name", None)
    alwayson = getattr(req, "alwayson_scripts", None)
    if runner is None:
        if script_name or alwayson:
            raise ScriptArgsError("No scripts are loaded on this server.",
                                  "Leave script_name and alwayson_scripts empty.")
        return
    _, values = build_script_args(runner, script_name=script_name, script_args=getattr(req, "script_args", None) or [],
                                  alwayson_scripts=alwayson)
    p.is_api = True
    p.script_args = values
    p.scripts = runner
    p.callbacks = script_callbacks  # the CFG/extra-noise/save callbacks fire for API jobs too
