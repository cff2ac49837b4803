"""T2I-Adapter: an always-on script that steers txt2img and img2img with adapter units (see ``t2i_adapter.units``).

Hooks, in pipeline order:

* ``setup`` (when the request arrives, before it is queued): units checked, API pictures decoded, preprocessors
  run; a bad unit raises ``InvalidRequest``, which refuses the request (HTTP 422, or the UI's error);
* ``process``: one infotext entry per enabled unit;
* ``process_before_every_sampling`` (each batch, and the hires pass): features for that picture size, and the
  per-step gate that ``on_cfg_denoiser`` applies to ``p.unet_hooks``;
* ``post_sample`` / ``postprocess``: ``p.unet_hooks`` cleared.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from modules import extensions, script_callbacks, scripts
from modules.errors import InvalidRequest
from modules.options import OptionInfo

EXTENSION_DIR = Path(__file__).resolve().parents[1]
PREPROCESSORS_DIR = EXTENSION_DIR.parent / "preprocessors"
SHIPPED_ADAPTERS_DIR = EXTENSION_DIR / "models"  # the demo adapter, trained on the demo model


def _use_preprocessors() -> bool:
    """The sibling "preprocessors" extension is used unless the user disabled it."""
    found = extensions.find_extension(extensions.extensions, "preprocessors")
    return PREPROCESSORS_DIR.is_dir() and (found is None or found.active)


# The loader restores sys.path after this file runs, so both packages are imported now, while it holds them.
sys.path.insert(0, str(EXTENSION_DIR))
if _use_preprocessors():
    sys.path.insert(1, str(PREPROCESSORS_DIR))
    try:
        import atelier_preprocessors  # noqa: F401
    except ImportError:
        logging.getLogger(__name__).warning("T2I-Adapter: the preprocessors extension could not be imported",
                                            exc_info=True)

from t2i_adapter import ui_runtime  # noqa: E402
from t2i_adapter.infotext import infotext_key, unit_infotext  # noqa: E402
from t2i_adapter.ui import build_units_ui  # noqa: E402
from t2i_adapter.ui_catalog import AdapterCatalog  # noqa: E402
from t2i_adapter.units import parse_units, prepare_maps  # noqa: E402

log = logging.getLogger(__name__)

UNITS_SETTING = "t2i_adapter_units"
DEFAULT_UNITS = 3


def _shared(name: str) -> Any:
    from modules import shared

    return getattr(shared, name, None)


def unit_count(opts: Any = None) -> int:
    """The ``t2i_adapter_units`` setting (1 to 10), read even before the Settings tab has declared it."""
    opts = opts if opts is not None else _shared("opts")
    data = getattr(opts, "data", None) or {}
    try:
        return min(max(int(data.get(UNITS_SETTING, DEFAULT_UNITS)), 1), 10)
    except (TypeError, ValueError):
        return DEFAULT_UNITS


def adapter_catalog(p: Any = None) -> AdapterCatalog:
    """The files in ``models/T2I-Adapter`` of the job's folders (else the app's, else the install's), then the demo
    adapter shipped in this extension's ``models/``."""
    paths = getattr(p, "paths", None) or _shared("paths")
    if paths is not None and hasattr(paths, "model_dir"):
        folder, cache_file = paths.model_dir("T2I-Adapter"), getattr(paths, "cache_file", None)
    else:
        from modules.paths import ROOT

        folder, cache_file = ROOT / "models" / "T2I-Adapter", None
    return AdapterCatalog.scan(folder, cache_file, SHIPPED_ADAPTERS_DIR)


def _api_image_decoder(p: Any) -> Any:
    from modules.api.api import decode_base64_to_image

    opts = getattr(p, "opts", None) or _shared("opts")
    return lambda text, what: decode_base64_to_image(text, what, opts)


class T2IAdapterScript(scripts.Script):
    def title(self) -> str:
        return "T2I-Adapter"

    def show(self, is_img2img: bool) -> Any:
        return scripts.AlwaysVisible

    def ui(self, is_img2img: bool) -> list[Any]:
        inputs, paste_fields = build_units_ui(self, unit_count(), adapter_catalog)
        self.infotext_fields = paste_fields
        return inputs

    def setup(self, p: Any, *args: Any) -> None:
        p.t2i_adapter_run = p.t2i_adapter_error = None
        try:
            run = self._checked_run(p, args)
        except InvalidRequest as e:
            p.t2i_adapter_error = e
            raise
        p.t2i_adapter_run = run

    def _checked_run(self, p: Any, args: Any) -> ui_runtime.AdapterRun:
        catalog = adapter_catalog(p)
        units = parse_units(args, catalog, is_api=bool(getattr(p, "is_api", False)), decode=_api_image_decoder(p))
        prepare_maps(units)
        return ui_runtime.AdapterRun(units, catalog)

    def _run(self, p: Any, args: Any) -> ui_runtime.AdapterRun | None:
        """The job's checked units (checked now if ``setup`` did not run); None when the request was refused."""
        if getattr(p, "t2i_adapter_error", None) is not None:
            return None
        run = getattr(p, "t2i_adapter_run", None)
        if run is None:
            try:
                run = p.t2i_adapter_run = self._checked_run(p, args)
            except InvalidRequest as e:
                p.t2i_adapter_error = e
                return None
        return run

    def process(self, p: Any, *args: Any) -> None:
        run = self._run(p, args)
        error = getattr(p, "t2i_adapter_error", None)
        if error is not None:
            log.warning("T2I-Adapter is off for this job: %s", error)
            p.comment(f"T2I-Adapter is off for this job: {error.message}")
            return
        for unit in run.units:
            p.extra_generation_params[infotext_key(unit.index)] = unit_infotext(unit, run.catalog.title(unit.model))

    def process_before_every_sampling(self, p: Any, *args: Any, **kwargs: Any) -> None:
        run = self._run(p, args)
        if run is None or not run.acting:
            return
        ui_runtime.start_sampling(p, run, kwargs["x"])

    def post_sample(self, p: Any, ps: Any, *args: Any) -> None:
        ui_runtime.finish_sampling(p)

    def postprocess(self, p: Any, processed: Any, *args: Any) -> None:
        ui_runtime.finish_sampling(p)


def on_ui_settings() -> None:
    opts = _shared("opts")
    if opts is None:
        return
    opts.add_option(UNITS_SETTING, OptionInfo(
        DEFAULT_UNITS, "Number of T2I-Adapter units", component_args={"minimum": 1, "maximum": 10, "step": 1},
        section=("t2i_adapter", "T2I-Adapter")).needs_reload_ui())


script_callbacks.on_ui_settings(on_ui_settings)
script_callbacks.on_cfg_denoiser(ui_runtime.on_cfg_denoiser)
