"""The HTTP application: middleware (GZip, CORS from flags), the Gradio UI mounted at the root, and keeping routes
added later (``on_app_started``) reachable in front of that mount."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware
from starlette.routing import Mount

from modules import localization, ui_assets


def add_middleware(app: FastAPI, args: argparse.Namespace) -> None:
    app.add_middleware(GZipMiddleware, minimum_size=1000)
    if args.cors_allow_origins or args.cors_allow_origins_regex:
        origins = [o.strip() for o in (args.cors_allow_origins or "").split(",") if o.strip()]
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_origin_regex=args.cors_allow_origins_regex,
                           allow_methods=["*"], allow_credentials=True, allow_headers=["*"])


def mount_ui(app: FastAPI, args: argparse.Namespace, credentials: list[tuple[str, str]], ctx: Any,
             exts: Iterable[Any] = (), build_id: str = "") -> FastAPI:
    """Mount the Gradio UI at "/" (queue on, so generation handlers stream progress) behind ``--gradio-auth``, with
    the page scripts and style sheets of the repository and of the active extensions ``exts``."""
    import gradio as gr

    from modules import ui

    exts = list(exts)
    blocks = ui.create_ui(ctx, args)
    blocks.queue(default_concurrency_limit=1)
    allowed = [str(ctx.paths.outputs_dir), *(getattr(args, "gradio_allowed_path", None) or [])]
    app.state.atelier_blocks = blocks
    translations = localization.selected_localization(ctx.opts, ctx.paths, exts)
    head = ui_assets.page_head(args, exts, build_id, getattr(blocks, "atelier_tooltips", None), translations)
    return gr.mount_gradio_app(app, blocks, path="/", auth=credentials or None, allowed_paths=allowed, head=head,
                               css_paths=ui_assets.css_files(ctx.paths, exts) or None, show_error=True,
                               footer_links=["api", "settings"], run_history=False)


def root_mounts_last(app: FastAPI) -> None:
    """Move the UI mounted at "/" behind every other route: it matches any path, so routes that extensions add in
    ``on_app_started`` (after the mount) would otherwise never be reached."""
    routes = app.router.routes
    mounts = [r for r in routes if isinstance(r, Mount) and r.path in ("", "/")]
    for mount in mounts:
        routes.remove(mount)
        routes.append(mount)
