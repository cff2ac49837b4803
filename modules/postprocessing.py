"""The Extras tab's upscale (A1111's ``postprocessing_upscale`` script): one picture in, a bigger picture out.

Shared by the UI's Extras tab and the ``/sdapi/v1/extra-*`` routes, so both resize alike and write the same infotext.
Upscalers are found by the names A1111 lists (``None``, ``Lanczos``, ``Nearest``, model files in ``models/ESRGAN``);
face restoration is not part of Atelier.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from modules.errors import InvalidRequest
from modules.infotext import quote
from modules.upscaling import UpscalerData, list_upscalers

MAX_SCALE = 16.0
MAX_SIDE = 16384
"""Limits on the result, so a typo cannot ask for a picture that fills the memory."""


@dataclass
class ExtrasSettings:
    """The Extras tab's upscale fields, with A1111's names and defaults."""

    resize_mode: int = 0  # 0: scale by upscaling_resize, 1: to upscaling_resize_w x _h
    upscaling_resize: float = 2.0
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True  # resize_mode 1: crop to the exact size (else fit inside)
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = 0.0
    upscale_first: bool = False  # orders upscale vs face restoration in A1111; no effect without face restoration


_model_lock = threading.Lock()
_loaded: dict[tuple[str, float], UpscalerData] = {}
"""The last used upscaler model file (by path and mtime): loading an ESRGAN takes longer than running it on a small
picture, and Extras is often run several times in a row with the same one."""


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def find_extras_upscaler(name: str | None, upscaler_dirs: Sequence[Path], field: str = "upscaler_1") -> UpscalerData:
    """The upscaler called ``name`` (exact, then case-insensitive); unknown names are an InvalidRequest listing all."""
    available = list_upscalers(upscaler_dirs, device=_device())
    wanted = name or "None"
    exact = [u for u in available if u.name == wanted]
    loose = [u for u in available if u.name.lower() == wanted.lower()]
    if exact or loose:
        return _reuse_loaded((exact or loose)[0])
    names = ", ".join(u.name for u in available)
    raise InvalidRequest(f"{field}: upscaler {wanted!r} not found. Valid upscalers: {names}.",
                         "Put ESRGAN-family model files in models/ESRGAN, or GET /sdapi/v1/upscalers.")


def _reuse_loaded(upscaler: UpscalerData) -> UpscalerData:
    """The same upscaler object as last time for a model file that has not changed (its weights stay loaded)."""
    if upscaler.kind != "model" or upscaler.path is None:
        return upscaler
    key = (str(upscaler.path.resolve()), upscaler.path.stat().st_mtime)
    with _model_lock:
        if key not in _loaded:
            _loaded.clear()
            _loaded[key] = upscaler
        return _loaded[key]


def check_settings(settings: ExtrasSettings) -> None:
    """Every field in range, or an InvalidRequest saying which one is not."""
    if settings.resize_mode not in (0, 1):
        raise InvalidRequest(f"resize_mode must be 0 (scale by) or 1 (scale to), got {settings.resize_mode!r}.")
    if settings.resize_mode == 0 and not 0 < float(settings.upscaling_resize) <= MAX_SCALE:
        raise InvalidRequest(f"upscaling_resize must be above 0 and at most {MAX_SCALE:g}, "
                             f"got {settings.upscaling_resize!r}.")
    if settings.resize_mode == 1:
        for key in ("upscaling_resize_w", "upscaling_resize_h"):
            value = int(getattr(settings, key))
            if not 8 <= value <= MAX_SIDE:
                raise InvalidRequest(f"{key} must be between 8 and {MAX_SIDE}, got {value}.")
    if not 0.0 <= float(settings.extras_upscaler_2_visibility) <= 1.0:
        raise InvalidRequest("extras_upscaler_2_visibility must be between 0 and 1, "
                             f"got {settings.extras_upscaler_2_visibility!r}.")


def _scale_for(image: Image.Image, settings: ExtrasSettings) -> float:
    if settings.resize_mode == 0:
        return float(settings.upscaling_resize)
    ratios = (settings.upscaling_resize_w / image.width, settings.upscaling_resize_h / image.height)
    return max(ratios) if settings.upscaling_crop else min(ratios)


def _cover_and_crop(image: Image.Image, width: int, height: int) -> Image.Image:
    """Exactly ``width`` x ``height``: enlarge a little if rounding left it short, then cut the centre out."""
    if image.width < width or image.height < height:
        ratio = max(width / image.width, height / image.height)
        size = (max(width, round(image.width * ratio)), max(height, round(image.height * ratio)))
        image = image.resize(size, resample=Image.Resampling.LANCZOS)
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return image.crop((left, top, left + width, top + height))


def _upscale_once(image: Image.Image, upscaler: UpscalerData, scale: float, settings: ExtrasSettings) -> Image.Image:
    result = upscaler.upscale(image, scale)
    if settings.resize_mode == 1 and settings.upscaling_crop:
        result = _cover_and_crop(result, int(settings.upscaling_resize_w), int(settings.upscaling_resize_h))
    return result


def run_extras(image: Image.Image, settings: ExtrasSettings,
               upscaler_dirs: Sequence[Path]) -> tuple[Image.Image, str]:
    """(upscaled image, infotext such as 'Postprocess upscale by: 2, Postprocess upscaler: Lanczos').

    Mode 0 scales by ``upscaling_resize`` (each side rounded down to a multiple of 8, as A1111's upscalers do);
    mode 1 scales to ``upscaling_resize_w`` x ``_h``: with ``upscaling_crop`` it covers that size and cuts the
    centre out, otherwise it fits inside it keeping the aspect ratio. ``upscaler_2`` is blended over the result with
    ``extras_upscaler_2_visibility``. With ``upscaler_1`` "None" the image is returned unchanged (as A1111 does).
    """
    check_settings(settings)
    image = image.convert("RGB")
    if settings.upscaler_1 in (None, "", "None"):
        return image, ""  # A1111: no main upscaler means no upscaling at all (upscaler 2 included)
    first = find_extras_upscaler(settings.upscaler_1, upscaler_dirs, "upscaler_1")
    second = None
    if settings.upscaler_2 not in (None, "", "None") and settings.extras_upscaler_2_visibility > 0:
        second = find_extras_upscaler(settings.upscaler_2, upscaler_dirs, "upscaler_2")
    scale = _scale_for(image, settings)
    if max(image.width, image.height) * scale > MAX_SIDE:
        raise InvalidRequest(f"The result would be larger than {MAX_SIDE} pixels on a side.",
                             "Use a smaller scale or a smaller input image.")

    info: dict[str, object] = {}
    if settings.resize_mode == 0:
        info["Postprocess upscale by"] = settings.upscaling_resize
    else:
        info["Postprocess upscale to"] = f"{settings.upscaling_resize_w}x{settings.upscaling_resize_h}"
    info["Postprocess upscaler"] = first.name
    result = _upscale_once(image, first, scale, settings)
    if second is not None:
        info["Postprocess upscaler 2"] = second.name
        info["Postprocess upscaler 2 visibility"] = settings.extras_upscaler_2_visibility
        other = _upscale_once(image, second, scale, settings)
        if other.size != result.size:
            other = other.resize(result.size, resample=Image.Resampling.LANCZOS)
        result = Image.blend(result, other, float(settings.extras_upscaler_2_visibility))
    if settings.resize_mode == 1 and settings.upscaling_crop:
        info["Postprocess crop to"] = f"{result.width}x{result.height}"
    return result, infotext_of(info)


def infotext_of(info: dict[str, object]) -> str:
    """A1111's postprocessing infotext: ``key: value`` pairs joined by ", ", values quoted when needed."""
    def shown(value: object) -> object:
        return f"{value:g}" if isinstance(value, float) else value

    return ", ".join(key if key == value else f"{key}: {quote(shown(value))}" for key, value in info.items()
                     if value is not None)
