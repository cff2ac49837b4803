"""Helpers for the ``/sdapi/v1`` tests: a real uvicorn server on a free local port, ``requests`` as the client."""

from __future__ import annotations

import base64
import contextlib
import io
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import requests
import torch
import uvicorn
from fastapi import FastAPI
from PIL import Image, PngImagePlugin

from modules import devices
from modules.api.api import Api, ApiContext
from modules.cmd_args import parse_args
from modules.jobs import JobQueue
from modules.model_selection import model_getter
from modules.options import Options
from modules.paths import paths_from_args
from modules.sd_models import ModelCache
from modules.shared_options import options_templates
from tests.conftest import start_app

TINY = {"prompt": "a red cube", "negative_prompt": "blurry", "seed": 5, "steps": 2, "width": 32, "height": 32,
        "cfg_scale": 5.0}


class Served:
    """A running server: its base URL, the context behind it and a way to stop it."""

    def __init__(self, ctx: ApiContext, url: str, server: uvicorn.Server, thread: threading.Thread) -> None:
        self.ctx, self.url, self.server, self.thread = ctx, url, server, thread

    def post(self, route: str, **kwargs: Any) -> requests.Response:
        return requests.post(f"{self.url}/sdapi/v1/{route}", timeout=120, **kwargs)

    def get(self, route: str, **kwargs: Any) -> requests.Response:
        return requests.get(f"{self.url}/sdapi/v1/{route}", timeout=120, **kwargs)

    def txt2img(self, **fields: Any) -> dict[str, Any]:
        response = self.post("txt2img", json={**TINY, **fields})
        assert response.status_code == 200, response.text
        return response.json()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.ctx.queue.shutdown(10)


def serve(tmp: Path, model: Any, ckpt_dir: Path, *flags: str,
          get_model: Callable[[ApiContext], Callable[[], Any]] | None = None) -> Served:
    """Serve the API for ``model`` (or the getter ``get_model(ctx)`` builds) with checkpoints from ``ckpt_dir``."""
    args = parse_args(["--data-dir", str(tmp), "--ckpt-dir", str(ckpt_dir), *flags], environ={})
    paths = paths_from_args(args)
    paths.ensure()
    opts = Options(options_templates)
    ctx = ApiContext(opts=opts, paths=paths, args=args, queue=JobQueue(), get_model=lambda: model)
    if get_model is not None:
        ctx.get_model = get_model(ctx)
    ctx.refresh_checkpoints()
    app = FastAPI()
    Api(app, ctx)
    url, server, thread = start_app(app)
    return Served(ctx, url, server, thread)


def serve_with_cache(tmp: Path, ckpt_dir: Path, *flags: str) -> Served:
    """A server whose model comes from a real ``ModelCache`` and ``model_getter``, as the app builds it (CPU, fp32)."""

    def build(ctx: ApiContext) -> Callable[[], Any]:
        choice = devices.choose(devices.detect_capabilities(), ctx.args)
        ctx.model_cache = ModelCache(ctx.args, choice, ctx.paths)
        return model_getter(ctx.opts, ctx.model_cache, lambda: ctx.checkpoints)

    return serve(tmp, None, ckpt_dir, "--use-cpu", "all", "--no-half", *flags, get_model=build)


def b64_png(image: Image.Image, text: str | None = None) -> str:
    info = PngImagePlugin.PngInfo()
    if text:
        info.add_text("parameters", text)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def pixels(b64: str) -> np.ndarray:
    return np.asarray(decode(b64).convert("RGB"))


def assert_error(response: requests.Response, status: int, *words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert {"error", "detail", "hint"} <= set(body)
    for word in words:
        assert word.lower() in body["detail"].lower(), body
    return body


@contextlib.contextmanager
def serving_on_one_thread(tmp: Path, model: Any, ckpt_dir: Path) -> Iterator[Served]:
    """:func:`serve` for a test module, with torch on one thread (jobs stay fast on the 2 shared cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    served = serve(tmp, model, ckpt_dir)
    try:
        yield served
    finally:
        served.stop()
        torch.set_num_threads(threads)
