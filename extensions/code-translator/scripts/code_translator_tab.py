"""Registers the code translator with Atelier: its tab, its settings and its HTTP routes."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from code_translator.settings import HostContext, register_options  # noqa: E402

from modules import script_callbacks, shared  # noqa: E402


def _tabs() -> list:
    from code_translator.ui import build_tab

    return [(build_tab(HostContext.from_shared()), "Code translator", "code_translator")]


def _settings() -> None:
    register_options(shared.opts)


def _routes(demo, app) -> None:
    from code_translator.api import add_routes

    context = getattr(getattr(app, "state", None), "atelier_context", None)
    host = HostContext.from_shared()
    if context is not None:  # the app's own settings and folders, as the /sdapi routes use them
        host = HostContext(lambda: context.opts, lambda: context.paths.models_dir, lambda: context.args)
    add_routes(app, host)


script_callbacks.on_ui_tabs(_tabs)
script_callbacks.on_ui_settings(_settings)
script_callbacks.on_app_started(_routes)
