"""T2I-Adapter units without a model: the two argument shapes, every check and its message, model lookup by the
spellings users send, infotext entries written and read back, preprocessor sliders, and map fitting."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from modules.errors import InvalidRequest
from modules.infotext import create_infotext_text, parse_generation_parameters
from modules.sd import hashes

EXTENSION = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(EXTENSION))
sys.path.insert(1, str(EXTENSION.parent / "preprocessors"))

from t2i_adapter.infotext import infotext_key, parse_unit_infotext, unit_infotext, units_from_params  # noqa: E402
from t2i_adapter.ui import slider_updates  # noqa: E402
from t2i_adapter.ui_catalog import AdapterCatalog, split_title  # noqa: E402
from t2i_adapter.ui_conditions import fit_map, map_tensor, run_map, threshold_specs  # noqa: E402
from t2i_adapter.units import UI_FIELDS, parse_units, resize_mode_name, split_script_args  # noqa: E402


@pytest.fixture
def catalog(tmp_path: Path) -> AdapterCatalog:
    folder = tmp_path / "T2I-Adapter"
    (folder / "sub").mkdir(parents=True)
    (folder / "t2iadapter_canny_sd15v2.pth").write_bytes(b"canny weights")
    (folder / "sub" / "depth.safetensors").write_bytes(b"depth weights")
    (folder / "readme.txt").write_text("not an adapter")
    diffusers = folder / "t2i-adapter-lineart-sdxl-1.0"
    diffusers.mkdir()
    (diffusers / "config.json").write_text("{}")
    (diffusers / "diffusion_pytorch_model.safetensors").write_bytes(b"lineart weights")
    return AdapterCatalog.scan(folder, tmp_path / "cache.json")


def picture(height: int = 24, width: int = 40) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[6:18, 10:30] = 255
    return image


def ui_values(**fields: object) -> list[object]:
    defaults = {"enabled": False, "image": None, "module": "none", "model": "None", "weight": 1.0,
                "guidance_start": 0.0, "guidance_end": 1.0, "resize_mode": "Crop and resize", "processor_res": 512,
                "threshold_a": 0, "threshold_b": 0}
    return [{**defaults, **fields}[name] for name in UI_FIELDS]


def test_catalog_names_titles_and_lookups(catalog: AdapterCatalog) -> None:
    assert catalog.names() == ["sub/depth", "t2i-adapter-lineart-sdxl-1.0", "t2iadapter_canny_sd15v2"]
    digest = hashes.short_hash(hashes.sha256_of_file(catalog.files["t2iadapter_canny_sd15v2"]))
    assert catalog.title("t2iadapter_canny_sd15v2") == f"t2iadapter_canny_sd15v2 [{digest}]"
    lineart = hashes.sha256_of_file(catalog.folder / "t2i-adapter-lineart-sdxl-1.0" /
                                    "diffusion_pytorch_model.safetensors")
    assert catalog.short_hash("t2i-adapter-lineart-sdxl-1.0") == lineart[:10]
    for spelling in ("t2iadapter_canny_sd15v2", "T2IAdapter_Canny_SD15v2", "t2iadapter_canny_sd15v2.pth",
                     f"t2iadapter_canny_sd15v2 [{digest}]", "t2iadapter_canny_sd15v2 [0badc0de]",
                     f"renamed [{digest[:8]}]"):
        assert catalog.find(spelling) == "t2iadapter_canny_sd15v2", spelling
    assert catalog.find("depth") == "sub/depth"
    assert catalog.find("sub/depth.safetensors") == "sub/depth"
    assert catalog.find("missing") is None and catalog.find("missing [0badc0de]") is None
    assert split_title("a [b] [12345678]") == ("a [b]", "12345678")


def test_ui_values_and_api_objects_give_the_same_unit(catalog: AdapterCatalog) -> None:
    flat = ui_values(enabled=True, image=picture(), model="sub/depth", weight=0.7, guidance_end=0.6,
                     resize_mode="Just resize")
    (from_ui,) = parse_units(flat + ui_values(), catalog)
    (from_api,) = parse_units([{"input_image": picture(), "model": "depth", "weight": 0.7, "guidance_end": 0.6,
                                "resize_mode": 0, "pixel_perfect": True}, *ui_values()], catalog, is_api=True)
    for unit in (from_ui, from_api):
        assert (unit.index, unit.model, unit.weight, unit.guidance_end, unit.resize_mode) == (
            0, "sub/depth", 0.7, 0.6, "Just resize")
        assert unit.image.shape == (24, 40, 3) and unit.image.dtype == np.uint8
    assert parse_units(ui_values() * 2, catalog) == []
    second = parse_units([{"enabled": False}, {"image": picture(), "model": "depth"}], catalog, is_api=True)
    assert [u.index for u in second] == [1]


def test_the_api_takes_unit_objects_only(catalog: AdapterCatalog) -> None:
    with pytest.raises(InvalidRequest, match="one object per unit"):
        split_script_args(ui_values(enabled=True, image="aGVsbG8=", model="depth"), is_api=True)
    assert len(split_script_args(ui_values() * 3, is_api=True)) == 3  # untouched defaults are fine


@pytest.mark.parametrize(("fields", "words"), [
    ({"model": "nope"}, ["adapter model 'nope' was not found", "Available: sub/depth, t2i-adapter-lineart-sdxl"]),
    ({"model": "None"}, ["no adapter model is chosen"]),
    ({"image": None}, ["no condition picture"]),
    ({"image": "aGVsbG8="}, ["pictures can only be decoded in API requests"]),
    ({"weight": float("nan")}, ["weight must be a number"]),
    ({"guidance_start": 1.5}, ["guidance_start must be a number from 0 to 1"]),
    ({"guidance_start": 0.6, "guidance_end": 0.4}, ["guidance_start (0.6) is after guidance_end (0.4)"]),
    ({"processor_res": 10}, ["processor_res must be a number from 64 to 4096"]),
    ({"resize_mode": "Stretch"}, ["resize_mode 'Stretch' is not one of"]),
    ({"module": "telepathy"}, ["preprocessor 'telepathy' is not available", "Available: none, canny"]),
    ({"strength": 2}, ["unknown field(s) 'strength'"]),
])
def test_every_check_names_the_unit_and_the_problem(catalog: AdapterCatalog, fields: dict, words: list[str]) -> None:
    raw = {"image": picture(), "model": "depth", **fields}
    with pytest.raises(InvalidRequest) as caught:
        parse_units([{"enabled": False}, raw], catalog, is_api=True)
    assert caught.value.message.startswith("T2I-Adapter unit 1: ")
    for word in words:
        assert word in caught.value.message
    assert caught.value.hint


def test_resize_mode_spellings() -> None:
    assert resize_mode_name(None) == "Crop and resize"
    assert resize_mode_name("just resize") == resize_mode_name(0) == "Just resize"
    assert resize_mode_name("Inner Fit (Scale to Fit)") == resize_mode_name(1.0) == "Crop and resize"
    assert resize_mode_name("Resize and Fill") == resize_mode_name("2") == "Resize and fill"


def test_infotext_entry_round_trip(catalog: AdapterCatalog) -> None:
    (unit,) = parse_units([{"image": picture(), "model": "t2iadapter_canny_sd15v2", "module": "canny", "weight": 0.75,
                            "guidance_start": 0.1, "guidance_end": 0.9, "threshold_a": 50}], catalog, is_api=True)
    title = catalog.title(unit.model)
    value = unit_infotext(unit, title)
    assert value == (f"module: canny, model: {title}, weight: 0.75, guidance start: 0.1, guidance end: 0.9, "
                     "resize mode: Crop and resize, processor res: 512, threshold a: 50.0, threshold b: 200.0")
    text = create_infotext_text("a cube", "", {"Steps": 4, infotext_key(2): value, "Seed": 1})
    assert f'T2I-Adapter 2: "{value}"' in text
    params = parse_generation_parameters(text)
    assert units_from_params(params) == {2: {
        "module": "canny", "model": title, "weight": 0.75, "guidance_start": 0.1, "guidance_end": 0.9,
        "resize_mode": "Crop and resize", "processor_res": 512, "threshold_a": 50.0, "threshold_b": 200.0}}
    assert catalog.find(units_from_params(params)[2]["model"]) == unit.model
    assert parse_unit_infotext("Model: a, b [12], WEIGHT: x, module: none") == {"model": "a, b [12]", "module": "none"}


def test_preprocessor_sliders_and_maps() -> None:
    assert [key for key, _ in threshold_specs("canny")] == ["low_threshold", "high_threshold"]
    assert threshold_specs("none") == [] and threshold_specs("no-such") == []
    image = picture(64, 64)
    edges = run_map("canny", image, 64, 100, 200)
    assert edges.shape == (64, 64, 3) and set(np.unique(edges)) == {0, 255}
    assert np.array_equal(run_map("none", image, 64), image)
    with pytest.raises(InvalidRequest, match="preprocessor 'canny' failed.*low_threshold"):
        run_map("canny", image, 64, 1000)


def test_slider_updates_follow_the_preprocessor() -> None:
    res, low, high = slider_updates("canny", reset_values=True)
    assert res["visible"] and res["value"] == 512
    assert (low["label"], low["minimum"], low["maximum"], low["value"]) == ("Low threshold", 1, 255, 100)
    assert high["label"] == "High threshold" and high["value"] == 200
    kept = slider_updates("canny", reset_values=False)
    assert all("value" not in update for update in kept), "a pasted module change keeps the pasted values"
    assert [u["visible"] for u in slider_updates("none", reset_values=True)] == [False, False, False]
    assert [u["visible"] for u in slider_updates("color", reset_values=False)] == [True, False, False]


def test_fit_map_modes() -> None:
    wide = np.full((10, 20, 3), 200, np.uint8)
    assert fit_map(wide, 16, 16, "Just resize").shape == (16, 16, 3)
    assert (fit_map(wide, 16, 16, "Just resize") == 200).all()
    cropped = fit_map(wide, 16, 16, "Crop and resize")
    assert cropped.shape == (16, 16, 3) and (cropped == 200).all(), "scaled to cover, the overflow cut"
    filled = fit_map(wide, 16, 16, "Resize and fill")
    assert filled.shape == (16, 16, 3)
    assert (filled[:4] == 0).all() and (filled[-4:] == 0).all() and (filled[4:12] == 200).all(), "black bars"
    tensor = map_tensor(filled)
    assert tensor.shape == (1, 3, 16, 16) and tensor.dtype == torch.float32
    assert float(tensor.max()) == pytest.approx(200 / 255)
