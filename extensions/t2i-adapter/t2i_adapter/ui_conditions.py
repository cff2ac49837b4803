"""Condition maps: a unit's picture through its preprocessor, then fitted to the picture being generated.

Preprocessors come from the ``preprocessors`` extension (package ``atelier_preprocessors``); without it only
"none" (the picture is already a map) is offered. A preprocessor's first two sliders are the unit's
``threshold_a``/``threshold_b`` (sd-webui-controlnet's names, which API clients send; other knobs keep their
defaults); its detection resolution is
``processor_res``. The map is made once per job at that resolution and then resized to each sampling pass's size
with the unit's resize mode (A1111's three: stretch, crop to fill, fit inside with black bars).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from modules.errors import InvalidRequest

NO_PREPROCESSOR = "none"
RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill")
_RESOLUTION_KEYS = ("resolution", "detect_resolution", "processor_res")


def preprocessor_api() -> Any | None:
    """The preprocessors extension's package, or None when it is not installed or enabled."""
    try:
        import atelier_preprocessors
    except ImportError:
        return None
    return atelier_preprocessors


def list_modules() -> list[str]:
    api = preprocessor_api()
    names = list(api.list_preprocessors()) if api is not None else []
    return [NO_PREPROCESSOR, *[n for n in names if n != NO_PREPROCESSOR]]


def threshold_specs(module: str) -> list[tuple[str, dict[str, Any]]]:
    """The (parameter name, slider spec) pairs behind ``threshold_a`` and ``threshold_b``, in that order (0-2)."""
    api = preprocessor_api()
    if api is None or module == NO_PREPROCESSOR:
        return []
    try:
        params = api.preprocessor_params(module)
    except Exception:  # an unknown name has no sliders; run_map reports it properly
        return []
    numeric = [(key, dict(spec)) for key, spec in params.items()
               if key not in _RESOLUTION_KEYS and spec.get("type", "slider") in ("slider", "number")]
    return numeric[:2]


def preprocessor_error_types() -> tuple[type[BaseException], ...]:
    api = preprocessor_api()
    error = getattr(api, "PreprocessorError", None) if api is not None else None
    return (error, ValueError) if isinstance(error, type) else (ValueError,)


def run_map(module: str, image: np.ndarray, processor_res: int, threshold_a: float | None = None,
            threshold_b: float | None = None, *, where: str = "T2I-Adapter") -> np.ndarray:
    """The condition map (H', W', 3) uint8 of ``image`` (H, W, 3) uint8; a preprocessor failure (missing weights,
    bad value) is an :class:`InvalidRequest` carrying its message."""
    image = as_rgb_array(image)
    if module == NO_PREPROCESSOR:
        return image
    api = preprocessor_api()
    if api is None:
        raise InvalidRequest(f"{where}: preprocessor {module!r} needs the preprocessors extension, which is not "
                             "enabled.", 'Enable "preprocessors" in the Extensions tab, or use module "none".')
    params = {}
    for (key, _), value in zip(threshold_specs(module), (threshold_a, threshold_b), strict=False):
        if value is not None:
            params[key] = value
    try:
        result = api.run_preprocessor(module, image, resolution=int(processor_res), **params)
    except preprocessor_error_types() as e:
        hint = getattr(e, "hint", "") or "Check the preprocessor and its settings, or use module \"none\"."
        raise InvalidRequest(f"{where}: preprocessor {module!r} failed: {getattr(e, 'message', None) or e}",
                             hint) from e
    return as_rgb_array(result)


def as_rgb_array(image: Any) -> np.ndarray:
    """(H, W, 3) uint8 from a PIL picture or an array (grey, RGB or RGBA; RGBA is put on black)."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise InvalidRequest(f"A condition picture must be (height, width, 3); got shape {array.shape}.",
                             "Send an RGB or greyscale PNG/JPEG.")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    if array.shape[2] == 4:
        alpha = array[:, :, 3:].astype(np.float32) / 255.0
        array = (array[:, :, :3].astype(np.float32) * alpha).round().astype(np.uint8)
    return np.ascontiguousarray(array)


def _resized(picture: Image.Image, width: int, height: int) -> Image.Image:
    shrinking = width <= picture.width and height <= picture.height
    return picture.resize((width, height), resample=Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR)


def fit_map(condition: np.ndarray, width: int, height: int, resize_mode: str) -> np.ndarray:
    """The map at exactly width x height: stretched ("Just resize"), scaled to cover and centre-cropped ("Crop and
    resize"), or scaled to fit and centred on black ("Resize and fill": black means "no condition" for edge maps)."""
    picture = Image.fromarray(as_rgb_array(condition))
    if picture.size == (width, height):
        return np.asarray(picture)
    if resize_mode == RESIZE_MODES[0]:
        return np.asarray(_resized(picture, width, height))
    cover = resize_mode == RESIZE_MODES[1]
    scale = (max if cover else min)(width / picture.width, height / picture.height)
    scaled_w = max(1, math.ceil(picture.width * scale - 1e-6) if cover else round(picture.width * scale))
    scaled_h = max(1, math.ceil(picture.height * scale - 1e-6) if cover else round(picture.height * scale))
    scaled = _resized(picture, scaled_w, scaled_h)
    canvas = Image.new("RGB", (width, height))
    canvas.paste(scaled, ((width - scaled_w) // 2, (height - scaled_h) // 2))
    return np.asarray(canvas)


def map_tensor(condition: np.ndarray) -> Tensor:
    """(1, 3, H, W) float32 in [0, 1], as ``compute_features`` takes it."""
    array = as_rgb_array(condition).astype(np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()
