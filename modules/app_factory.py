"""The HTTP application: middleware (GZip, CORS from flags) and the Gradio UI mounted at the root."""

from __future__ import annotations

import argparse

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware


def add_middleware(app: FastAPI, args: argparse.Namespace) -> None:
    app.add_middleware(GZipMiddleware, minimum_size=1000)
    if args.cors_allow_origins or args.cors_allow_origins_regex:
        origins = [o.strip() for o in (args.cors_allow_origins or "").split(",") if o.strip()]
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_origin_regex=args.cors_allow_origins_regex,
                           allow_methods=["*"], allow_credentials=True, allow_headers=["*"])


def build_ui():
    """The Gradio Blocks of the browser UI."""
    import gradio as gr

    with gr.Blocks(title="Atelier", analytics_enabled=False) as demo:
        gr.Markdown("# Atelier\nStable Diffusion web UI.")
    return demo


def mount_ui(app: FastAPI, args: argparse.Namespace, credentials: list[tuple[str, str]]) -> FastAPI:
    import gradio as gr

    return gr.mount_gradio_app(app, build_ui(), path="/", auth=credentials or None)
