"""T2I-Adapter units through the real ``/sdapi/v1`` API (uvicorn on a local port, ``requests``), with the demo
model and a tiny random adapter in a temporary ``models/T2I-Adapter``: a unit steers the picture, weight 0 does
not, the infotext entry pasted back (PNG Info) reproduces the picture, pictures come as base64 or URL, img2img takes
units too, and every bad unit is a 422 that says what is wrong."""

from __future__ import annotations

import functools
import http.server
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from modules import extensions, script_callbacks, scripts, shared
from modules.paths import DEMO_CHECKPOINT_DIR
from modules.sd.loader import load_model
from tests.api.server import Served, assert_error, b64_png, pixels, serve
from tests.conftest import free_port

EXTENSION = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(EXTENSION))

from t2i_adapter import ui_runtime  # noqa: E402
from t2i_adapter.adapter_full import Adapter, FullAdapterConfig  # noqa: E402
from t2i_adapter.infotext import units_from_params  # noqa: E402

DEMO = DEMO_CHECKPOINT_DIR / "atelier-demo.safetensors"
ADAPTER = "tiny-demo-edge"
REQUEST = {"prompt": "a red circle on a blue background, top left", "negative_prompt": "", "seed": 3, "steps": 6,
           "width": 64, "height": 64, "cfg_scale": 5.0, "sampler_name": "Euler"}

pytestmark = pytest.mark.skipif(not DEMO.is_file(), reason=f"the demo model {DEMO} is missing")


def write_demo_adapter(folder: Path) -> None:
    """A random adapter shaped for the demo UNet (levels of 64/128/128 channels, VAE factor 4), one-channel input."""
    torch.manual_seed(0)
    module = Adapter(FullAdapterConfig(channels=(64, 128, 128), nums_rb=1, cond_channels=1, unshuffle=4))
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: v * 4 for k, v in module.state_dict().items()}, folder / f"{ADAPTER}.pth")


def disk(size: int = 64, value: int = 255) -> Image.Image:
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - size * 0.6) ** 2 + (xx - size * 0.4) ** 2 < (size * 0.25) ** 2
    return Image.fromarray(np.where(inside[..., None], value, 0).astype(np.uint8).repeat(3, axis=2))


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("t2i-api")
    with pytest.MonkeyPatch.context() as patch:
        script_callbacks.clear_callbacks()
        for name in ("scripts_data", "load_errors", "scripts_txt2img", "scripts_img2img", "current_basedir"):
            patch.setattr(scripts, name, getattr(scripts, name))
        patch.setattr(scripts, "script_extension", dict(scripts.script_extension))
        scripts.load_scripts([extensions.Extension("t2i-adapter", EXTENSION, is_builtin=True)],
                             builtin_scripts_dir=tmp / "no-scripts")
        assert not scripts.load_errors, scripts.load_errors
        ui_runtime.clear_adapter_cache()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        served = serve(tmp, load_model(DEMO), DEMO_CHECKPOINT_DIR)
        try:
            served.ctx.scripts_info = scripts.script_info
            served.ctx.prepare_scripts = scripts.prepare_api_request
            app = served.server.config.app
            app.state.atelier_context = served.ctx  # as webui.build_app keeps it
            script_callbacks.app_started_callback(None, app)
            patch.setattr(shared, "paths", served.ctx.paths)  # what the app sets: the request thread reads it
            patch.setattr(shared, "opts", served.ctx.opts)
            write_demo_adapter(served.ctx.paths.model_dir("T2I-Adapter"))
            yield served
        finally:
            served.stop()
            torch.set_num_threads(threads)
            script_callbacks.clear_callbacks()


def unit(**fields: Any) -> dict[str, Any]:
    return {"image": b64_png(disk()), "module": "none", "model": ADAPTER, **fields}


def txt2img(api: Served, units: list[dict[str, Any]] | None = None, **fields: Any) -> dict[str, Any]:
    body = {**REQUEST, **fields}
    if units is not None:
        body["alwayson_scripts"] = {"T2I-Adapter": {"args": units}}
    return api.txt2img(**body)


def difference(a: dict[str, Any], b: dict[str, Any]) -> float:
    return float(np.abs(pixels(a["images"][0]).astype(np.int16) - pixels(b["images"][0])).mean())


def test_script_info_lists_the_units(api: Served) -> None:
    info = [s for s in api.get("script-info").json() if s["name"] == "t2i-adapter"]
    assert [s["is_img2img"] for s in info] == [False, True]
    labels = [a["label"] for a in info[0]["args"]]
    assert len(labels) == 3 * 11 and labels[:4] == ["Enable", "Condition picture", "Preprocessor", "Adapter model"]
    assert ADAPTER in info[0]["args"][3]["choices"]


def test_a_unit_steers_the_picture_and_weight_zero_does_not(api: Served) -> None:
    plain = txt2img(api)
    steered = txt2img(api, [unit()])
    assert difference(steered, plain) > 2.0
    assert difference(txt2img(api, [unit(weight=0)]), plain) == 0.0
    assert difference(txt2img(api, [unit(enabled=False), unit(enabled=False)]), plain) == 0.0
    info = json.loads(steered["info"])
    assert info["extra_generation_params"]["T2I-Adapter 0"].startswith(f"module: none, model: {ADAPTER} [")
    assert "T2I-Adapter" not in json.loads(plain["info"])["infotexts"][0]


def test_the_infotext_pasted_back_reproduces_the_picture(api: Served) -> None:
    sent = unit(image=b64_png(disk(value=50)), module="canny", weight=0.9, guidance_start=0.0, guidance_end=0.8,
                resize_mode="Just resize", processor_res=128, threshold_a=60, threshold_b=180)
    first = txt2img(api, [{"enabled": False}, sent])
    read = api.post("png-info", json={"image": first["images"][0]})
    assert read.status_code == 200, read.text
    params = read.json()["parameters"]
    restored = units_from_params(params)
    assert list(restored) == [1]
    fields = restored[1]
    assert {k: fields[k] for k in ("module", "weight", "guidance_start", "guidance_end", "resize_mode",
                                   "processor_res", "threshold_a", "threshold_b")} == {
        "module": "canny", "weight": 0.9, "guidance_start": 0.0, "guidance_end": 0.8, "resize_mode": "Just resize",
        "processor_res": 128, "threshold_a": 60.0, "threshold_b": 180.0}
    again = txt2img(api, [{"enabled": False}, {**fields, "image": sent["image"]}], seed=int(params["Seed"]))
    assert difference(again, first) == 0.0
    stricter = {**sent, "threshold_a": 250, "threshold_b": 255}  # the dim disk's edges are too weak for these
    assert difference(first, txt2img(api, [{"enabled": False}, stricter])) > 0.0


@pytest.fixture
def picture_url(api: Served, tmp_path: Path) -> Iterator[str]:
    disk().save(tmp_path / "disk.png")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None  # type: ignore[assignment]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    forbid = api.ctx.opts.api_forbid_local_requests
    api.ctx.opts.set("api_forbid_local_requests", False)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/disk.png"
    finally:
        api.ctx.opts.set("api_forbid_local_requests", forbid)
        server.shutdown()


def test_a_picture_can_come_from_a_url(api: Served, picture_url: str) -> None:
    by_value = txt2img(api, [unit()])
    by_url = txt2img(api, [unit(image=picture_url)])
    assert difference(by_url, by_value) == 0.0


def test_img2img_takes_units(api: Served) -> None:
    source = Image.new("RGB", (64, 64), (40, 60, 200))
    body = {**REQUEST, "init_images": [b64_png(source)], "denoising_strength": 0.8}
    plain = api.post("img2img", json=body)
    steered = api.post("img2img", json={**body, "alwayson_scripts": {"t2i-adapter": {"args": [unit()]}}})
    assert plain.status_code == steered.status_code == 200, steered.text
    assert difference(steered.json(), plain.json()) > 1.0
    assert "T2I-Adapter 0" in json.loads(steered.json()["info"])["infotexts"][0]


def test_bad_units_are_422_with_the_reason(api: Served) -> None:
    def post(*units: Any) -> Any:
        return api.post("txt2img", json={**REQUEST, "alwayson_scripts": {"T2I-Adapter": {"args": list(units)}}})

    body = assert_error(post(unit(model="t2iadapter_canny_sd14v1")), 422, "'t2iadapter_canny_sd14v1'", "not found",
                        f"Available: {ADAPTER}")
    assert "models/T2I-Adapter" in body["hint"]
    assert_error(post(True, b64_png(disk()), "none", ADAPTER), 422, "one object per unit")
    assert_error(post(unit(image="not base64!")), 422, "T2I-Adapter unit 0 image", "not valid base64")
    assert_error(post(unit(module="midas")), 422, "preprocessor 'midas' failed", "dpt_hybrid-midas-501f0c75.pt")
    assert_error(post(unit(), unit(guidance_start=0.9, guidance_end=0.1)), 422, "T2I-Adapter unit 1",
                 "after guidance_end")
    assert_error(post(unit(weight="strong")), 422, "weight must be a number")
    assert api.txt2img(**REQUEST)["images"], "the server still generates after refusals"


def test_a_picture_with_another_aspect_is_fitted(api: Served) -> None:
    tall = disk(64).resize((32, 96))
    modes = [txt2img(api, [unit(image=b64_png(tall), resize_mode=mode)])
             for mode in ("Just resize", "Crop and resize", "Resize and fill")]
    assert difference(modes[0], modes[1]) > 0.0 and difference(modes[1], modes[2]) > 0.0
