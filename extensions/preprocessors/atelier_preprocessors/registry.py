"""The preprocessors by name: label, parameters, and how each one runs (without weights, or with a detector).

Names are short and stable (they are the API's ``module`` values); a few A1111 ControlNet module names are accepted
as aliases so requests written for that extension find the same preprocessor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import detectors, keypose, simple
from .errors import PreprocessorUnavailable, UnknownPreprocessor
from .specs import Param, checkbox, slider
from .weights import cache, require_weights


@dataclass(frozen=True)
class RunInput:
    """What a run gets: the picture at detection size, the source picture's (W, H), where weights are, the device."""

    image: np.ndarray
    source_size: tuple[int, int]
    folder: Path
    device: Any


@dataclass(frozen=True)
class Preprocessor:
    name: str
    label: str
    description: str
    params: tuple[Param, ...] = ()
    run: Callable[[RunInput, dict[str, Any]], Any] | None = None
    weighted: detectors.Weighted | None = None
    unavailable: str | None = None  # why it can never run here (a missing package), else None

    def weight_files(self, params: dict[str, Any] | None = None) -> tuple[str, ...]:
        """Files a run with ``params`` (default: the defaults) needs."""
        if self.weighted is None:
            return ()
        values = {p.name: p.value for p in self.params} | (params or {})
        return self.weighted.files(values)


def load_detector(name: str, weighted: detectors.Weighted, params: dict[str, Any], folder: Path, device: Any,
                  alternative: str = "") -> Any:
    """The cached detector for these files, loaded and moved to ``device`` on first use; files checked first."""
    paths = require_weights(name, weighted.files(params), folder, alternative)
    key = (name, tuple(sorted((k, str(v)) for k, v in paths.items())), str(device))

    def load() -> Any:
        detector = weighted.load(name, paths)
        return detector if str(device) == "cpu" else weighted.move(detector, device)

    return cache.get(key, load)


def run_weighted(name: str, weighted: detectors.Weighted) -> Callable[[RunInput, dict[str, Any]], Any]:
    def run(job: RunInput, params: dict[str, Any]) -> Any:
        detector = load_detector(name, weighted, params, job.folder, job.device)
        return weighted.run(detector, job.image, params)

    return run


def run_keypose(job: RunInput, params: dict[str, Any]) -> np.ndarray:
    """Given keypoints are drawn as they are; without them the OpenPose body model finds the people first."""
    h, w = job.image.shape[:2]
    given = params["keypoints"]
    if given is not None and not (isinstance(given, str) and not given.strip()) and len(given) > 0:
        people = keypose.parse_keypoints(params["keypoints"], job.source_size)
        people = keypose.scale_people(people, job.source_size, (w, h))
    else:
        openpose = detectors.WEIGHTED["openpose"]
        detector = load_detector("keypose", openpose, {}, job.folder, job.device,
                                 alternative="Or give the keypoints as JSON (the Keypoints parameter).")
        people = [keypose.openpose_to_coco(p) for p in detectors.openpose_people(detector, job.image)]
    return keypose.draw_keypose((h, w), people, params["radius"], params["thickness"], params["score_threshold"])


def _simple(fn: Callable[..., np.ndarray]) -> Callable[[RunInput, dict[str, Any]], np.ndarray]:
    return lambda job, params: fn(job.image, **params)


_SAFE = checkbox("safe", "Safe steps (quantised edges)")
_SCRIBBLE = checkbox("scribble", "Scribble (thick, binarised lines)")

_ALL = (
    Preprocessor("none", "None", "The picture itself, resized: for maps made elsewhere.",
                 run=_simple(simple.passthrough)),
    Preprocessor("canny", "Canny", "Canny edges, white on black (canny adapters, ControlNet canny).",
                 (slider("low_threshold", "Low threshold", 100, 1, 255, integer=True),
                  slider("high_threshold", "High threshold", 200, 1, 255, integer=True)), run=_simple(simple.canny)),
    Preprocessor("shuffle", "Content shuffle", "Pixels moved along a smooth random flow (shuffle ControlNet).",
                 (slider("scale", "Flow scale (px)", 256, 8, 1024, integer=True),
                  Param("seed", "Seed (-1: random)", -1, "number", -1, 2**31 - 1, 1, integer=True)),
                 run=_simple(simple.content_shuffle)),
    Preprocessor("lineart_standard", "Lineart (standard, no weights)", "Lines darker than their surroundings.",
                 (slider("gaussian_sigma", "Gaussian sigma", 6.0, 0.5, 32.0, 0.1),
                  slider("intensity_threshold", "Intensity threshold", 8, 0, 64, integer=True)),
                 run=_simple(simple.lineart_standard)),
    Preprocessor("color", "Color grid (T2I color)", "T2I's spatial palette: 1/64 cubic shrink, nearest enlargement.",
                 run=_simple(simple.color_grid)),
    Preprocessor("keypose", "Keypose (T2I, COCO skeleton)",
                 "mmpose-style COCO skeletons from keypoints JSON, or from OpenPose when none are given.",
                 (Param("keypoints", "Keypoints JSON (empty: detect with OpenPose)", "", "text"),
                  slider("radius", "Point radius", 2, 1, 16, integer=True),
                  slider("thickness", "Line thickness", 2, 1, 16, integer=True),
                  slider("score_threshold", "Score threshold", 0.1, 0.0, 1.0, 0.01)), run=run_keypose),
    Preprocessor("binary", "Binary (threshold)", "White above the threshold, black below (0: Otsu's threshold).",
                 (slider("threshold", "Threshold (0: automatic)", 127, 0, 255, integer=True),
                  checkbox("invert", "Invert")), run=_simple(simple.binary)),
    Preprocessor("invert", "Invert", "The negative: dark lines on white become white lines on black.",
                 run=_simple(simple.invert)),
    Preprocessor("midas", "Depth (MiDaS DPT-Hybrid)", "Relative depth, near is bright (T2I depth adapters).",
                 weighted=detectors.WEIGHTED["midas"]),
    Preprocessor("zoe", "Depth (ZoeDepth)", "Metric-trained depth (zoedepth adapters).",
                 (checkbox("gamma_corrected", "Gamma corrected"),), weighted=detectors.WEIGHTED["zoe"]),
    Preprocessor("openpose", "OpenPose", "OpenPose skeletons (openpose adapters, ControlNet openpose).",
                 (checkbox("include_hand", "Hands (needs hand_pose_model.pth)"),
                  checkbox("include_face", "Face (needs facenet.pth)")), weighted=detectors.WEIGHTED["openpose"]),
    Preprocessor("dwpose", "DWPose", "Whole-body pose estimation.",
                 unavailable="DWPose needs mmcv, mmdet and mmpose, which Atelier does not install; use openpose."),
    Preprocessor("hed", "Soft edges (HED)", "Soft edge map.", (_SAFE, _SCRIBBLE), weighted=detectors.WEIGHTED["hed"]),
    Preprocessor("pidinet", "Soft edges / sketch (PiDiNet)", "Soft edges; 'Binarise at 0.5' gives T2I's sketch map.",
                 (_SAFE, _SCRIBBLE, checkbox("apply_filter", "Binarise at 0.5 (T2I sketch)")),
                 weighted=detectors.WEIGHTED["pidinet"]),
    Preprocessor("lineart", "Lineart (realistic)", "Line drawing of a photo.",
                 (checkbox("coarse", "Coarse (needs sk_model2.pth)"),), weighted=detectors.WEIGHTED["lineart"]),
    Preprocessor("lineart_anime", "Lineart (anime)", "Line drawing of an illustration.",
                 weighted=detectors.WEIGHTED["lineart_anime"]),
    Preprocessor("mlsd", "Straight lines (M-LSD)", "Straight line segments, white on black.",
                 (slider("thr_v", "Value threshold", 0.1, 0.01, 2.0, 0.01),
                  slider("thr_d", "Distance threshold", 0.1, 0.01, 20.0, 0.01)), weighted=detectors.WEIGHTED["mlsd"]),
    Preprocessor("normalbae", "Normal map (BAE)", "Surface normals as colours.",
                 weighted=detectors.WEIGHTED["normalbae"]),
    Preprocessor("segmentation", "Segmentation (SAM)", "Segment Anything masks, one random colour each.",
                 weighted=detectors.WEIGHTED["segmentation"]),
)
PREPROCESSORS: dict[str, Preprocessor] = {p.name: p for p in _ALL}
ALIASES = {
    "threshold": "binary", "depth_midas": "midas", "depth": "midas", "depth_zoe": "zoe", "softedge_hed": "hed",
    "softedge_pidinet": "pidinet", "lineart_realistic": "lineart", "normal_bae": "normalbae",
    "t2ia_color_grid": "color", "seg": "segmentation", "openpose_full": "openpose", "dw_openpose_full": "dwpose",
}


def get(name: str) -> Preprocessor:
    """The preprocessor called ``name`` (case-insensitive, aliases allowed); UnknownPreprocessor lists the names."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in PREPROCESSORS:
        raise UnknownPreprocessor(f"Unknown preprocessor {name!r}. Known: {', '.join(PREPROCESSORS)}.",
                                  "GET /sdapi/v1/preprocessors lists them with their parameters.")
    return PREPROCESSORS[key]


def runner(preprocessor: Preprocessor) -> Callable[[RunInput, dict[str, Any]], Any]:
    if preprocessor.unavailable:
        raise PreprocessorUnavailable(f"The {preprocessor.name} preprocessor is not available: "
                                      f"{preprocessor.unavailable}")
    if preprocessor.weighted is not None:
        return run_weighted(preprocessor.name, preprocessor.weighted)
    assert preprocessor.run is not None
    return preprocessor.run
