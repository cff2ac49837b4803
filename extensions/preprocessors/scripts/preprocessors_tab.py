"""Preprocessors extension: the "Preprocessors" tab and, with the API on, ``/sdapi/v1/preprocess(ors)``.

The code lives in the ``atelier_preprocessors`` package beside this folder; this file only wires it to the app.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

EXTENSION_DIR = Path(__file__).resolve().parents[1]
if str(EXTENSION_DIR) not in sys.path:
    sys.path.insert(0, str(EXTENSION_DIR))

import numpy as np  # noqa: E402
from atelier_preprocessors.api import run_with_params  # noqa: E402

from modules import script_callbacks, shared  # noqa: E402


def run_on_queue(module: str, image: np.ndarray, resolution: int, params: dict[str, Any]) -> np.ndarray:
    """A map made on the app's job queue (never beside a generation); weights from the app's models/annotators."""
    queue = getattr(shared, "job_queue", None)

    def job() -> np.ndarray:
        return run_with_params(module, image, resolution, params)

    if queue is None:
        return job()
    return queue.submit(job, kind="preprocess", description=f"preprocess ({module})").wait()


def preprocessors_tab() -> list[tuple[Any, str, str]]:
    from atelier_preprocessors.ui import create_tab

    return [(create_tab(run_on_queue), "Preprocessors", "preprocessors")]


def preprocessor_routes(demo: Any, app: Any) -> None:
    """The HTTP routes, when the app serves the API (``--api`` or ``--nowebui``), like the core ``/sdapi`` routes."""
    ctx = getattr(app.state, "atelier_context", None)
    if ctx is None or not (getattr(ctx.args, "api", False) or getattr(ctx.args, "nowebui", False)):
        return
    from atelier_preprocessors.routes import add_routes

    add_routes(app, ctx)


script_callbacks.on_ui_tabs(preprocessors_tab)
script_callbacks.on_app_started(preprocessor_routes)
