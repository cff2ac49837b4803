"""Public face of the preprocessors: list them, describe their knobs, run one on a picture.

Every face (the Preprocessors tab, ``/sdapi/v1/preprocess``, the T2I-Adapter units) goes through
:func:`run_preprocessor`; errors a user can fix are :class:`PreprocessorError` subclasses with a message and a hint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import registry
from .errors import (
    BadAnnotatorWeights,
    MissingAnnotatorWeights,
    PreprocessorError,
    PreprocessorUnavailable,
    UnknownPreprocessor,
)
from .imaging import as_map, as_rgb_uint8, detection_size, resize_image
from .specs import resolve_params
from .weights import annotators_dir, configure, device, missing_weights

__all__ = ["BadAnnotatorWeights", "MissingAnnotatorWeights", "PreprocessorError", "PreprocessorUnavailable",
           "UnknownPreprocessor", "canonical_name", "configure", "list_preprocessors", "preprocessor_info",
           "preprocessor_params", "run_preprocessor", "run_with_params"]


def list_preprocessors() -> list[str]:
    """Every preprocessor name, weight-free ones first ("none", "canny", ...), unavailable ones included."""
    return list(registry.PREPROCESSORS)


def canonical_name(name: str) -> str:
    """The registry's name for ``name`` (case and A1111 ControlNet aliases resolved); UnknownPreprocessor if none."""
    return registry.get(name).name


def preprocessor_params(name: str) -> dict[str, dict]:
    """Knob specs by parameter name: ``{"low_threshold": {"label", "type", "value", "min", "max", "step"}}``."""
    return {p.name: p.describe() for p in registry.get(name).params}


def preprocessor_info(name: str, annotators_folder: str | Path | None = None) -> dict[str, Any]:
    """Name, label, description, params and whether it can run now (``available``; ``reason`` says why not)."""
    pre = registry.get(name)
    folder = annotators_dir(annotators_folder)
    files = pre.weight_files()
    missing = missing_weights(files, folder)
    if pre.unavailable:
        reason = pre.unavailable
    elif missing:
        reason = f"Missing weight file(s) {', '.join(missing)} in {folder}."
    else:
        reason = None
    optional = pre.weighted.optional if pre.weighted else ()
    if pre.name == "keypose":
        optional = ("body_pose_model.pth",)  # only to detect people when no keypoints are given
    return {"name": pre.name, "label": pre.label, "description": pre.description,
            "params": preprocessor_params(pre.name), "weights": list(files), "optional_weights": list(optional),
            "available": reason is None, "reason": reason}


def run_preprocessor(name: str, image: np.ndarray, resolution: int = 512, *,
                     annotators_folder: str | Path | None = None, **params: Any) -> np.ndarray:
    """The map of ``image`` ((H, W, 3) uint8 RGB; grey and RGBA accepted) as (H', W', 3) uint8.

    The picture's short side is scaled to ``resolution`` (-1: its own) and both sides rounded to multiples of 64;
    the map has that size. ``params`` are the preprocessor's knobs (see :func:`preprocessor_params`); weights come
    from ``annotators_folder`` (default: the app's ``models/annotators``) and are never downloaded.
    """
    return run_with_params(name, image, resolution, params, annotators_folder)


def run_with_params(name: str, image: np.ndarray, resolution: int, params: dict[str, Any],
                    annotators_folder: str | Path | None = None) -> np.ndarray:
    """:func:`run_preprocessor` with the knobs as one dict (for faces whose parameter names come from users)."""
    pre = registry.get(name)
    values = resolve_params(pre.name, pre.params, dict(params or {}))
    run = registry.runner(pre)
    picture = as_rgb_uint8(image)
    size = detection_size(picture.shape[0], picture.shape[1], resolution)
    job = registry.RunInput(image=resize_image(picture, size), source_size=(picture.shape[1], picture.shape[0]),
                            folder=annotators_dir(annotators_folder), device=device())
    return as_map(run(job, values), size)
