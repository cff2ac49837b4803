"""Glue to the running app: one :class:`Lab` per job queue, the tab for ``on_ui_tabs``, the routes for
``on_app_started``. The queue and folders come from the app's ``ApiContext`` when there is one, else from
``modules.shared`` (A1111's compatibility surface), exactly the objects the ``/sdapi/v1`` routes use."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from afno_lab.lab_jobs import RunRegistry
from afno_lab.store import LabPaths, ModelStore

log = logging.getLogger(__name__)


@dataclass
class Lab:
    queue: Any
    paths: LabPaths
    registry: RunRegistry
    store: ModelStore


_labs: dict[int, Lab] = {}


def lab_for(queue: Any, app_paths: Any) -> Lab:
    """The lab bound to ``queue`` (runs started from the page and from the API share one registry)."""
    lab = _labs.get(id(queue))
    if lab is None or lab.queue is not queue:
        paths = LabPaths.from_app_paths(app_paths)
        lab = _labs[id(queue)] = Lab(queue, paths, RunRegistry(), ModelStore(paths))
    return lab


def _shared_lab() -> Lab:
    from modules import shared

    if shared.job_queue is None or shared.paths is None:
        raise RuntimeError("the AFNO lab needs the app's job queue and folders (modules.shared is not set up)")
    return lab_for(shared.job_queue, shared.paths)


def on_ui_tabs() -> list[tuple[Any, str, str]]:
    from afno_lab.ui import LabUi, build_tab

    lab = _shared_lab()
    return [(build_tab(LabUi(lab.queue, lab.paths, lab.registry, lab.store)), "AFNO lab", "afno_lab")]


def on_app_started(demo: Any, app: Any) -> None:
    from afno_lab.api import LabApi, mount

    ctx = getattr(app.state, "atelier_context", None)
    if ctx is not None:
        lab = lab_for(ctx.queue, ctx.paths)
        api_auth = getattr(ctx.args, "api_auth", None)
    else:
        lab = _shared_lab()
        from modules import shared

        api_auth = getattr(shared.cmd_opts, "api_auth", None)
    mount(app, LabApi(lab.queue, lab.paths, lab.registry, lab.store), api_auth)
    log.info("AFNO lab: /afno/v1 routes added")
