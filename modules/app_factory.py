"""The HTTP application: middleware (GZip, CORS from flags) and the Gradio UI mounted at the root."""

from __future__ import annotations

import argparse
import html
import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware

from modules.paths import ROOT

JAVASCRIPT_DIR = ROOT / "javascript"
STYLE_FILE = ROOT / "style.css"


def add_middleware(app: FastAPI, args: argparse.Namespace) -> None:
    app.add_middleware(GZipMiddleware, minimum_size=1000)
    if args.cors_allow_origins or args.cors_allow_origins_regex:
        origins = [o.strip() for o in (args.cors_allow_origins or "").split(",") if o.strip()]
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_origin_regex=args.cors_allow_origins_regex,
                           allow_methods=["*"], allow_credentials=True, allow_headers=["*"])


def theme_script(theme: str | None) -> str:
    """``--theme light|dark``: reload with Gradio's ``?__theme=`` parameter unless the URL already has it."""
    if theme not in ("light", "dark"):
        return ""
    return ("<script>(function(){var u=new URL(window.location.href);"
            f"if(u.searchParams.get('__theme')!=='{theme}'){{u.searchParams.set('__theme','{theme}');"
            "window.location.replace(u.href);}})();</script>")


def javascript_files() -> list[Path]:
    """The page scripts in ``javascript/``, in name order (A1111 loads its folder the same way)."""
    return sorted(JAVASCRIPT_DIR.glob("*.js")) if JAVASCRIPT_DIR.is_dir() else []


def page_head(args: argparse.Namespace, tooltips: dict[str, str] | None = None) -> str:
    """What goes into the page's ``<head>``: the theme switch, tooltips and every script of ``javascript/``."""
    parts = [theme_script(getattr(args, "theme", None))]
    if tooltips:
        data = json.dumps(tooltips).replace("</", "<\\/")
        parts.append(f"<script>window.atelierTooltips = {data};</script>")
    for path in javascript_files():
        source = path.read_text(encoding="utf8").replace("</script", "<\\/script")
        parts.append(f"<script data-source='{html.escape(path.name)}'>{source}</script>")
    return "\n".join(p for p in parts if p)


def css_paths(paths: Any) -> list[Path]:
    """``style.css`` of the install, then the user's ``user.css`` from the data folder (A1111's order)."""
    found = [STYLE_FILE] if STYLE_FILE.is_file() else []
    user_css = Path(paths.data_dir) / "user.css" if paths is not None else None
    if user_css is not None and user_css.is_file():
        found.append(user_css)
    return found


def mount_ui(app: FastAPI, args: argparse.Namespace, credentials: list[tuple[str, str]], ctx: Any) -> FastAPI:
    """Mount the Gradio UI at "/" (queue on, so generation handlers stream progress) behind ``--gradio-auth``."""
    import gradio as gr

    from modules import ui

    blocks = ui.create_ui(ctx, args)
    blocks.queue(default_concurrency_limit=1)
    allowed = [str(ctx.paths.outputs_dir), *(getattr(args, "gradio_allowed_path", None) or [])]
    app.state.atelier_blocks = blocks
    return gr.mount_gradio_app(app, blocks, path="/", auth=credentials or None, allowed_paths=allowed,
                               head=page_head(args, getattr(blocks, "atelier_tooltips", None)),
                               css_paths=css_paths(ctx.paths) or None, show_error=True,
                               footer_links=["api", "settings"], run_history=False)
