"""``/sdapi/v1/preprocess`` and ``/sdapi/v1/preprocessors`` over real HTTP (uvicorn on 127.0.0.1, ``requests``).

The app is the API as ``webui.build_app`` makes it (``Api`` on a FastAPI app carrying the ``ApiContext``), and the
routes come from the extension's own script file: its ``on_app_started`` callback is called as the app calls it.
(The browser test loads the extension through the full start-up.)"""

from __future__ import annotations

import base64
import importlib.util
import io
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from fastapi import FastAPI
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atelier_preprocessors import run_preprocessor  # noqa: E402

from modules import script_callbacks  # noqa: E402
from modules.api.api import Api, ApiContext  # noqa: E402
from modules.cmd_args import parse_args  # noqa: E402
from modules.jobs import JobQueue  # noqa: E402
from modules.options import Options  # noqa: E402
from modules.paths import paths_from_args  # noqa: E402
from modules.shared_options import options_templates  # noqa: E402
from modules.training.shapes_dataset import ShapeSpec, render  # noqa: E402
from tests.conftest import start_app  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "preprocessors_tab.py"

SQUARE = render(ShapeSpec("square", "red", "blue", "center", "large"), 64)


@dataclass
class App:
    url: str
    annotators: Path

    def post(self, json: Any = None, **kwargs: Any) -> requests.Response:
        return requests.post(f"{self.url}/sdapi/v1/preprocess", json=json, timeout=60, **kwargs)


def b64_png(array: np.ndarray, mode: str | None = None) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def pixels(b64: str) -> np.ndarray:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"))


def error(response: requests.Response, status: int, *words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert {"error", "detail", "hint"} <= set(body)
    for word in words:
        assert word.lower() in (body["detail"] + " " + body["hint"]).lower(), body
    return body


def load_script() -> Any:
    """The extension's script file run as a module (as ``modules.scripts`` runs it), its callbacks unregistered."""
    spec = importlib.util.spec_from_file_location("preprocessors_tab_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for callback in (module.preprocessors_tab, module.preprocessor_routes):
        script_callbacks.remove_callbacks_for_function(callback)
    return module


def api_app(data_dir: Path, *flags: str) -> tuple[FastAPI, ApiContext]:
    """The app ``build_app`` makes for the API, with the extension's ``on_app_started`` run on it."""
    args = parse_args(["--data-dir", str(data_dir), *flags], environ={})
    paths = paths_from_args(args)
    paths.ensure()
    ctx = ApiContext(opts=Options(options_templates), paths=paths, args=args, queue=JobQueue(), get_model=lambda: None)
    app = FastAPI()
    app.state.atelier_context = ctx
    if args.api or args.nowebui:
        Api(app, ctx)
    load_script().preprocessor_routes(None, app)
    return app, ctx


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    fastapi_app, ctx = api_app(tmp_path_factory.mktemp("pre-api"), "--api")
    url, server, thread = start_app(fastapi_app)
    try:
        yield App(url, Path(ctx.paths.model_dir("annotators")))
    finally:
        server.should_exit = True
        thread.join(10)
        ctx.queue.shutdown(10)


def test_routes_come_only_with_the_api_like_the_core_sdapi_routes(tmp_path: Path) -> None:
    ui_only, _ = api_app(tmp_path / "ui")
    assert not [path for path in ui_only.openapi()["paths"] if path.startswith("/sdapi/")]
    api_only, _ = api_app(tmp_path / "api", "--nowebui")
    paths = api_only.openapi()["paths"]
    assert {"/sdapi/v1/preprocess", "/sdapi/v1/preprocessors", "/sdapi/v1/txt2img"} <= set(paths)
    assert {"422", "424"} <= set(paths["/sdapi/v1/preprocess"]["post"]["responses"])


def test_list_shows_every_module_with_params_and_availability(app: App) -> None:
    response = requests.get(f"{app.url}/sdapi/v1/preprocessors", timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["annotators_dir"] == str(app.annotators)
    modules = {m["name"]: m for m in body["modules"]}
    assert {"none", "canny", "color", "keypose", "hed", "pidinet", "dwpose", "segmentation"} <= set(modules)
    canny = modules["canny"]
    assert canny["available"] is True and canny["reason"] is None and canny["weights"] == []
    assert canny["params"]["low_threshold"] == {"label": "Low threshold", "type": "slider", "value": 100,
                                                "min": 1, "max": 255, "step": 1}
    hed = modules["hed"]
    assert hed["available"] is False and hed["weights"] == ["ControlNetHED.pth"]
    assert "ControlNetHED.pth" in hed["reason"] and str(app.annotators) in hed["reason"]
    assert modules["dwpose"]["available"] is False and "mmpose" in modules["dwpose"]["reason"]


def test_preprocess_round_trip_gives_the_same_map_as_the_library(app: App) -> None:
    response = app.post({"image": f"data:image/png;base64,{b64_png(SQUARE)}", "module": "canny",
                         "processor_res": 64, "params": {"low_threshold": 50}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["module"] == "canny" and len(body["images"]) == 1
    edges = pixels(body["images"][0])
    assert np.array_equal(edges, run_preprocessor("canny", SQUARE, 64, low_threshold=50)) and edges.max() == 255

    grid = app.post({"image": b64_png(SQUARE), "module": "T2IA_COLOR_GRID", "processor_res": 128})
    assert grid.status_code == 200 and grid.json()["module"] == "color"
    assert pixels(grid.json()["images"][0]).shape == (128, 128, 3)
    pose = app.post({"image": b64_png(np.zeros((64, 64), np.uint8), "L"), "module": "keypose", "processor_res": 64,
                     "params": {"keypoints": [[[32, 10, 1], [30, 8, 1], [34, 8, 1]] + [[0, 0, 0]] * 14]}})
    assert pose.status_code == 200, pose.text
    assert pixels(pose.json()["images"][0]).any()  # the head's points and links are drawn


def test_bad_requests_are_clear_4xx_json(app: App) -> None:
    image = b64_png(SQUARE)
    error(app.post({"image": image, "module": "nope"}), 422, "'nope'", "canny")
    error(app.post({"image": "not base64!!", "module": "canny"}), 422, "base64")
    error(app.post({"image": base64.b64encode(b"hello").decode(), "module": "canny"}), 422, "not an image")
    error(app.post({"image": image, "module": "canny", "params": {"low_threshold": 999}}), 422, "low_threshold",
          "between 1 and 255")
    error(app.post({"image": image, "module": "canny", "params": {"annotators_folder": "/"}}), 422,
          "annotators_folder")
    error(app.post({"image": image, "module": "canny", "processor_res": 8}), 422, "resolution")
    error(app.post({"image": image, "module": "keypose", "params": {"keypoints": "{oops"}}), 422, "JSON")
    error(app.post({"module": "canny"}), 422, "image")
    started = time.perf_counter()
    body = error(app.post({"image": image, "module": "hed"}), 424, "ControlNetHED.pth", str(app.annotators))
    assert time.perf_counter() - started < 5 and body["error"] == "MissingAnnotatorWeights"
    error(app.post({"image": image, "module": "dwpose"}), 424, "mmpose")
    assert app.post({"image": image, "module": "invert", "processor_res": 64}).status_code == 200  # still serving
