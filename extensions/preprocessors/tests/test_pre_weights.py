"""Weighted preprocessors: a missing file is a quick, named error without any network attempt; files saved in the
released layouts (random weights) load and run, and give what controlnet-aux's own loaders give; bad files are clear
errors."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atelier_preprocessors import (  # noqa: E402
    BadAnnotatorWeights,
    MissingAnnotatorWeights,
    preprocessor_info,
    run_preprocessor,
    weights,  # noqa: E402
)
from atelier_preprocessors.detectors import aux  # noqa: E402

from modules.training.shapes_dataset import ShapeSpec, render  # noqa: E402

PICTURE = render(ShapeSpec("square", "black", "white", "center", "large"), 64)
NEEDS = {  # preprocessor (and parameters) → the file it must name
    ("midas", ()): "dpt_hybrid-midas-501f0c75.pt",
    ("zoe", ()): "ZoeD_M12_N.pt",
    ("openpose", ()): "body_pose_model.pth",
    ("keypose", ()): "body_pose_model.pth",
    ("hed", ()): "ControlNetHED.pth",
    ("pidinet", ()): "table5_pidinet.pth",
    ("lineart", ()): "sk_model.pth",
    ("lineart", (("coarse", True),)): "sk_model2.pth",
    ("lineart_anime", ()): "netG.pth",
    ("mlsd", ()): "mlsd_large_512_fp32.pth",
    ("normalbae", ()): "scannet.pt",
    ("segmentation", ()): "sam_vit_h_4b8939.pth",
}


class NetworkUsed(BaseException):
    """Raised by a blocked socket; a BaseException so no library's ``except Exception`` can hide it."""


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise NetworkUsed(f"network attempt: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # offline mode must not be what saves us


def test_every_weighted_detector_names_its_missing_file_quickly_and_offline(tmp_path: Path, no_network: None) -> None:
    imported_before = "controlnet_aux" in sys.modules
    for (name, params), filename in NEEDS.items():
        started = time.perf_counter()
        with pytest.raises(MissingAnnotatorWeights) as caught:
            run_preprocessor(name, PICTURE, 64, annotators_folder=tmp_path, **dict(params))
        assert time.perf_counter() - started < 1.0, name
        error = caught.value
        assert error.filename == filename and error.folder == tmp_path and error.status_code == 424
        assert filename in error.message and str(tmp_path) in error.message and str(tmp_path) in error.hint
        info = preprocessor_info(name, tmp_path)
        if name == "keypose":  # it runs on given keypoints without weights; the file is only for detection
            assert info["available"] is True and info["optional_weights"] == [filename]
            assert "keypoints" in error.hint
        else:
            assert info["available"] is False and NEEDS[(name, ())] in info["reason"]
    with pytest.raises(MissingAnnotatorWeights, match="hand_pose_model.pth"):
        torch.save({}, tmp_path / "body_pose_model.pth")
        run_preprocessor("openpose", PICTURE, 64, annotators_folder=tmp_path, include_hand=True)
    if not imported_before:
        assert "controlnet_aux" not in sys.modules  # the files are checked before the 4-8 s import


def pidinet_file(folder: Path) -> Path:
    """Random PiDiNet weights saved as the released table5_pidinet.pth is: {"state_dict": {"module.<key>": ...}}."""
    torch.manual_seed(0)
    state = aux("pidi.model").pidinet().state_dict()
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, folder / "table5_pidinet.pth")
    return folder / "table5_pidinet.pth"


def test_pidinet_and_hed_run_from_files_in_the_released_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              no_network: None) -> None:
    folder = tmp_path / "annotators"
    pidinet_file(folder / "pidinet")  # in a subfolder: found too
    assert preprocessor_info("pidinet", folder)["available"] is True
    monkeypatch.setitem(weights._settings, "device", "meta")  # detectors go to the configured device
    with pytest.raises(Exception, match="meta"):
        run_preprocessor("pidinet", PICTURE, 64, annotators_folder=folder)
    [on_meta] = weights.cache._items.values()
    assert next(on_meta.netNetwork.parameters()).device.type == "meta"
    monkeypatch.setitem(weights._settings, "device", "cpu")
    soft = run_preprocessor("pidinet", PICTURE, 64, annotators_folder=folder)
    sketch = run_preprocessor("pidinet", PICTURE, 64, annotators_folder=folder, apply_filter=True)
    assert soft.shape == sketch.shape == (64, 64, 3) and soft.dtype == np.uint8
    assert set(np.unique(sketch)) <= {0, 255}  # T2I's sketch map: edges binarised at 0.5
    own = aux("pidi").PidiNetDetector.from_pretrained(str(folder / "pidinet"))
    assert np.array_equal(soft, own(PICTURE, detect_resolution=64, image_resolution=64, output_type="np"))

    hed = aux("hed")
    torch.manual_seed(1)
    torch.save(hed.ControlNetHED_Apache2().state_dict(), folder / "ControlNetHED.pth")
    edges = run_preprocessor("hed", PICTURE, 128, annotators_folder=folder)
    assert edges.shape == (128, 128, 3) and len(np.unique(edges)) > 8  # soft edges: many grey levels
    reference = hed.HEDdetector.from_pretrained(str(folder))(PICTURE, detect_resolution=128, image_resolution=128,
                                                             output_type="np")
    assert np.array_equal(edges, reference)
    scribble = run_preprocessor("hed", PICTURE, 128, annotators_folder=folder, scribble=True)
    assert set(np.unique(scribble)) <= {0, 255}


def test_unreadable_or_foreign_weight_files_are_named_errors(tmp_path: Path) -> None:
    (tmp_path / "ControlNetHED.pth").write_bytes(b"not a torch file")
    with pytest.raises(BadAnnotatorWeights, match="ControlNetHED.pth could not be read") as caught:
        run_preprocessor("hed", PICTURE, 64, annotators_folder=tmp_path)
    assert caught.value.status_code == 424 and str(tmp_path) in caught.value.hint
    pidinet_file(tmp_path).rename(tmp_path / "sk_model.pth")  # another network's weights under lineart's name
    with pytest.raises(BadAnnotatorWeights, match="sk_model.pth does not fit the lineart network"):
        run_preprocessor("lineart", PICTURE, 64, annotators_folder=tmp_path)


@pytest.mark.slow
def test_the_lazily_registered_package_still_serves_every_name() -> None:
    """Only the needed controlnet-aux submodules are imported; code elsewhere importing the package by name gets
    the whole package (its real ``__init__`` runs on the first such name)."""
    import subprocess

    code = ("import sys; sys.path.insert(0, sys.argv[1]); from atelier_preprocessors.detectors import aux; "
            "aux('hed'); assert 'controlnet_aux.zoe' not in sys.modules; import controlnet_aux; "
            "from controlnet_aux import CannyDetector, HEDdetector; "
            "assert HEDdetector is controlnet_aux.hed.HEDdetector and controlnet_aux.__version__ == '0.0.10'; "
            "assert 'controlnet_aux.zoe' in sys.modules; print('ok')")
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", code, str(Path(__file__).resolve().parents[1])],
                            capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[3])
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stdout + result.stderr
