"""Preprocessors with weights, run by controlnet-aux 0.0.10's detector classes.

controlnet-aux's own ``from_pretrained`` is not used: it falls back to the Hugging Face hub when a file is missing,
reads some files without ``map_location`` (GPU-saved files fail on a CPU), and loads Zoe non-strictly whatever the
mismatch. Here the networks are built from its classes and the weights loaded by :mod:`.weights`, after the files
were found, so nothing here ever calls the hub (``HF_HUB_OFFLINE`` is not needed, and not set: it would change the
whole process). Only the controlnet-aux submodule a detector needs is imported, on first use (see
``_register_lazy_package``).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import threading
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PreprocessorUnavailable
from .weights import load_into, read_state_dict

_package_lock = threading.RLock()


def _register_lazy_package() -> None:
    """Put ``controlnet_aux`` in ``sys.modules`` without running its ``__init__``, which imports every detector
    (SAM, Zoe, mediapipe...: 4-15 s) when one needs a single submodule (0.2 s). The first package-level name anyone
    asks for (``from controlnet_aux import CannyDetector`` elsewhere) runs the real ``__init__`` into the same module,
    so other code sees the ordinary package."""
    if "controlnet_aux" in sys.modules:
        return
    spec = importlib.util.find_spec("controlnet_aux")
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError("No module named 'controlnet_aux'", name="controlnet_aux")
    package = importlib.util.module_from_spec(spec)

    def load_on_demand(name: str) -> Any:
        if name.startswith("__") and name not in ("__version__", "__all__"):
            raise AttributeError(name)
        try:
            return importlib.import_module(f"controlnet_aux.{name}")
        except ModuleNotFoundError:
            pass
        with _package_lock:
            if package.__dict__.pop("__getattr__", None) is not None:
                spec.loader.exec_module(package)
        return package.__dict__[name] if name in package.__dict__ else _missing(name)

    def _missing(name: str) -> Any:
        raise AttributeError(f"module 'controlnet_aux' has no attribute {name!r}")

    package.__getattr__ = load_on_demand  # type: ignore[method-assign]
    sys.modules["controlnet_aux"] = package


def aux(module: str) -> Any:
    """``controlnet_aux.<module>``, imported quietly (its timm/jit deprecation warnings are not the user's business)."""
    try:
        with _package_lock:
            _register_lazy_package()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(f"controlnet_aux.{module}")
    except Exception as e:  # missing package, or one of its dependencies broken
        raise PreprocessorUnavailable(f"controlnet-aux could not be imported ({type(e).__name__}: {e}).",
                                      "Install the pinned version: pip install controlnet-aux==0.0.10") from e


@dataclass(frozen=True)
class Weighted:
    """How one weighted preprocessor finds, loads and runs its detector.

    ``files(params)`` names the weight files a run with ``params`` needs (``optional`` lists the files only some
    parameter values need); ``load(name, paths)`` builds the detector from ``{file name: path}``;
    ``run(detector, image, params)`` maps the picture (at detection size) with it; ``move(detector, device)`` puts
    its networks on a device (default: the detector's own ``.to``).
    """

    files: Callable[[dict[str, Any]], tuple[str, ...]]
    load: Callable[[str, dict[str, Path]], Any]
    run: Callable[[Any, np.ndarray, dict[str, Any]], Any]
    optional: tuple[str, ...] = field(default=())
    move: Callable[[Any, Any], Any] = field(default=lambda detector, device: detector.to(device))


def _fixed(*names: str) -> Callable[[dict[str, Any]], tuple[str, ...]]:
    return lambda params: names


def _size_args(image: np.ndarray) -> dict[str, Any]:
    """controlnet-aux's resolution arguments that leave an image already at detection size as it is."""
    side = min(image.shape[:2])
    return {"detect_resolution": side, "image_resolution": side, "output_type": "np"}


def _only(path_map: dict[str, Path]) -> Path:
    return next(iter(path_map.values()))


# loaders --------------------------------------------------------------------------------------------------------
def load_hed(name: str, paths: dict[str, Path]) -> Any:
    hed = aux("hed")
    path = _only(paths)
    return hed.HEDdetector(load_into(hed.ControlNetHED_Apache2(), read_state_dict(path, name), path, name))


def load_pidinet(name: str, paths: dict[str, Path]) -> Any:
    pidi, model = aux("pidi"), aux("pidi.model")
    path = _only(paths)
    net = load_into(model.pidinet(), read_state_dict(path, name, unwrap=("state_dict",)), path, name)
    return pidi.PidiNetDetector(net)


def load_lineart(name: str, paths: dict[str, Path]) -> Any:
    lineart = aux("lineart")
    path = _only(paths)
    net = load_into(lineart.Generator(3, 1, 3), read_state_dict(path, name), path, name)
    return lineart.LineartDetector(net, net)  # one file per call: the fine or the coarse model


def load_lineart_anime(name: str, paths: dict[str, Path]) -> Any:
    import torch.nn as nn

    anime = aux("lineart_anime")
    path = _only(paths)
    norm = functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    net = anime.UnetGenerator(3, 1, 8, 64, norm_layer=norm, use_dropout=False)
    return anime.LineartAnimeDetector(load_into(net, read_state_dict(path, name), path, name))


def load_mlsd(name: str, paths: dict[str, Path]) -> Any:
    mlsd, large = aux("mlsd"), aux("mlsd.models.mbv2_mlsd_large")
    path = _only(paths)
    return mlsd.MLSDdetector(load_into(large.MobileV2_MLSD_Large(), read_state_dict(path, name), path, name))


def load_normalbae(name: str, paths: dict[str, Path]) -> Any:
    normalbae, nnet = aux("normalbae"), aux("normalbae.nets.NNET")
    path = _only(paths)
    args = types.SimpleNamespace(mode="client", architecture="BN", pretrained="scannet", sampling_ratio=0.4,
                                 importance_ratio=0.7)
    net = load_into(nnet.NNET(args), read_state_dict(path, name, unwrap=("model",)), path, name)
    return normalbae.NormalBaeDetector(net)


def load_midas(name: str, paths: dict[str, Path]) -> Any:
    midas, dpt = aux("midas"), aux("midas.midas.dpt_depth")
    path = _only(paths)
    net = dpt.DPTDepthModel(path=None, backbone="vitb_rn50_384", non_negative=True)  # timm backbone, no download
    return midas.MidasDetector(load_into(net, read_state_dict(path, name, unwrap=("model",)), path, name))


def load_zoe(name: str, paths: dict[str, Path]) -> Any:
    zoe, zoedepth, config = aux("zoe"), aux("zoe.zoedepth.models.zoedepth"), aux("zoe.zoedepth.utils.config")
    path = _only(paths)
    net = zoedepth.ZoeDepth.build_from_config(config.get_config("zoedepth", "infer"))
    state = read_state_dict(path, name, unwrap=("model",))
    return zoe.ZoeDetector(load_into(net, state, path, name, tolerated=("relative_position_index",)))


def load_segmentation(name: str, paths: dict[str, Path]) -> Any:
    sam, build = aux("segment_anything"), aux("segment_anything.build_sam")
    path = _only(paths)
    net = load_into(build.sam_model_registry["vit_h"](checkpoint=None), read_state_dict(path, name), path, name)
    return sam.SamDetector(sam.SamAutomaticMaskGenerator(net))


OPENPOSE_BODY, OPENPOSE_HAND, OPENPOSE_FACE = "body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"


def openpose_files(params: dict[str, Any]) -> tuple[str, ...]:
    return (OPENPOSE_BODY, *((OPENPOSE_HAND,) if params.get("include_hand") else ()),
            *((OPENPOSE_FACE,) if params.get("include_face") else ()))


def load_openpose(name: str, paths: dict[str, Path]) -> Any:
    """OpenPose with only the parts asked for: body always, hand and face networks when their files are given."""
    op, body_mod, hand_mod, face_mod = (aux("open_pose"), aux("open_pose.body"), aux("open_pose.hand"),
                                        aux("open_pose.face"))
    util, model = aux("open_pose.util"), aux("open_pose.model")

    def part(cls: type, net: Any, filename: str, remap: bool) -> Any:
        path = paths[filename]
        state = read_state_dict(path, name)
        if remap:  # the released body/hand files name layers without their block prefix
            state = util.transfer(net, state) if _has_all_short_keys(net, state) else state
        obj = object.__new__(cls)  # their __init__ would torch.load without map_location
        obj.model = load_into(net, state, path, name)
        return obj

    body = part(body_mod.Body, model.bodypose_model(), OPENPOSE_BODY, remap=True)
    hand = part(hand_mod.Hand, model.handpose_model(), OPENPOSE_HAND, remap=True) if OPENPOSE_HAND in paths else None
    face = None
    if OPENPOSE_FACE in paths:
        face = part(face_mod.Face, face_mod.FaceNet(), OPENPOSE_FACE, remap=False)
        face.inference_size = face_mod.params["inference_img_size"]
        face.sigma = face_mod.params["gaussian_sigma"]
        face.threshold = face_mod.params["heatmap_peak_thresh"]
    return op.OpenposeDetector(body, hand, face)


def move_openpose(detector: Any, device: Any) -> Any:
    """Only the parts that were loaded (controlnet-aux's ``.to`` assumes hand and face networks exist)."""
    for part in (detector.body_estimation, detector.hand_estimation, detector.face_estimation):
        if part is not None:
            part.to(device)
    return detector


def move_segmentation(detector: Any, device: Any) -> Any:
    detector.mask_generator.predictor.model.to(device)
    return detector


def _has_all_short_keys(net: Any, state: dict) -> bool:
    """True when ``state`` uses the released files' names (the net's key minus its first component)."""
    return all(".".join(k.split(".")[1:]) in state for k in net.state_dict())


# runners --------------------------------------------------------------------------------------------------------
def run_plain(detector: Any, image: np.ndarray, params: dict[str, Any]) -> Any:
    return detector(image, **params, **_size_args(image))


def run_openpose(detector: Any, image: np.ndarray, params: dict[str, Any]) -> Any:
    return detector(image, include_body=True, include_hand=bool(params.get("include_hand")),
                    include_face=bool(params.get("include_face")), **_size_args(image))


def run_segmentation(detector: Any, image: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """SAM's automatic masks, each in a random colour; a picture with no masks is black (controlnet-aux crashes)."""
    masks = detector.mask_generator.generate(image)
    if not masks:
        return np.zeros_like(image)
    return detector.show_anns(masks)


def openpose_people(detector: Any, image: np.ndarray) -> list[np.ndarray]:
    """OpenPose body points of everyone in ``image`` as (18, 3) arrays in its pixels (missing points: score 0)."""
    h, w = image.shape[:2]
    people = []
    for pose in detector.detect_poses(image):
        points = np.zeros((18, 3))
        for i, kp in enumerate(pose.body.keypoints[:18]):
            if kp is not None:
                points[i] = (kp.x * w, kp.y * h, 1.0)
        people.append(points)
    return people


WEIGHTED: dict[str, Weighted] = {
    "midas": Weighted(_fixed("dpt_hybrid-midas-501f0c75.pt"), load_midas, run_plain),
    "zoe": Weighted(_fixed("ZoeD_M12_N.pt"), load_zoe, run_plain),
    "openpose": Weighted(openpose_files, load_openpose, run_openpose, optional=(OPENPOSE_HAND, OPENPOSE_FACE),
                         move=move_openpose),
    "hed": Weighted(_fixed("ControlNetHED.pth"), load_hed, run_plain),
    "pidinet": Weighted(_fixed("table5_pidinet.pth"), load_pidinet, run_plain),
    "lineart": Weighted(lambda p: ("sk_model2.pth",) if p.get("coarse") else ("sk_model.pth",), load_lineart,
                        lambda det, image, params: det(image, coarse=bool(params.get("coarse")), **_size_args(image)),
                        optional=("sk_model2.pth",)),
    "lineart_anime": Weighted(_fixed("netG.pth"), load_lineart_anime, run_plain),
    "mlsd": Weighted(_fixed("mlsd_large_512_fp32.pth"), load_mlsd, run_plain),
    "normalbae": Weighted(_fixed("scannet.pt"), load_normalbae, run_plain),
    "segmentation": Weighted(_fixed("sam_vit_h_4b8939.pth"), load_segmentation, run_segmentation,
                             move=move_segmentation),
}
