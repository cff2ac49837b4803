"""Live preview decoders: turn the latent the sampler hands out every few steps into a PIL picture.

The method is A1111's ``show_progress_type`` setting:

* "Approx cheap" (default): a fixed linear map of the latent channels to RGB, one pixel per latent cell (well under a
  millisecond; the UI scales it up) — :mod:`modules.sd_vae_approx`;
* "TAESD": the tiny autoencoder's decoder (:mod:`modules.sd.taesd`), full size, a few milliseconds on a GPU; needs
  ``models/VAE-approx/taesd_decoder.{safetensors,pth}`` (``taesdxl_decoder`` for SDXL) and falls back to the cheap
  map, saying why once, when the file is missing or unreadable;
* "Approx NN": A1111's small VAE-approx network (``model.pt``) is not supported; the cheap map is used instead;
* "Full": the model's own VAE, exact but as slow as the final decode.

Every decoder previews only the first image of the batch it is given (A1111's default); which rows the sampler hands
over (``live_preview_content``) is the CFG denoiser's business.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from modules.errors import AtelierError
from modules.sd import taesd
from modules.sd_vae_approx import latent_to_rgb_preview, rgb_to_image

log = logging.getLogger(__name__)

PreviewDecoder = Callable[[Tensor], Image.Image]

PREVIEW_TYPES = ("Full", "Approx NN", "Approx cheap", "TAESD")
DEFAULT_PREVIEW_TYPE = "Approx cheap"
TAESD_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt")

_said: set[str] = set()
_taesd_cache: dict[tuple, nn.Module] = {}
_taesd_lock = threading.Lock()


def _say_once(message: str) -> None:
    """Log a fallback's reason the first time only: previews are built for every batch of every job."""
    if message not in _said:
        _said.add(message)
        log.warning(message)


def taesd_decoder_name(family: str) -> str:
    """``taesdxl_decoder`` for the SDXL latent space, ``taesd_decoder`` for SD1/SD2's."""
    return "taesdxl_decoder" if family.startswith("sdxl") else "taesd_decoder"


def vae_approx_dir(paths: Any) -> Path | None:
    """``models/VAE-approx`` from a :class:`modules.paths.Paths` (or anything with ``models_dir``); None if unknown."""
    if paths is None:
        return None
    if callable(getattr(paths, "model_dir", None)):
        return Path(paths.model_dir("VAE-approx"))
    models_dir = getattr(paths, "models_dir", None)
    return Path(models_dir) / "VAE-approx" if models_dir is not None else None


def find_taesd_decoder(paths: Any, family: str) -> Path | None:
    """The TAESD decoder weights for ``family`` in ``models/VAE-approx`` (``.safetensors`` first), or None."""
    folder = vae_approx_dir(paths)
    if folder is None:
        return None
    stem = taesd_decoder_name(family)
    for suffix in TAESD_WEIGHT_SUFFIXES:
        candidate = folder / (stem + suffix)
        if candidate.is_file():
            return candidate
    return None


def _taesd_module(path: Path, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """The decoder for ``path`` on ``device``/``dtype``, loaded once and kept (reloaded if the file changes)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, str(device), dtype)
    with _taesd_lock:
        module = _taesd_cache.get(key)
        if module is None:
            module = taesd.load_tiny_decoder(path).to(device=device, dtype=dtype)
            _taesd_cache.clear()  # one decoder at a time: a model switch drops the other family's
            _taesd_cache[key] = module
    return module


def cheap_decoder(family: str) -> PreviewDecoder:
    """Approx cheap: the family's linear latent->RGB map, one pixel per latent cell."""
    return functools.partial(latent_to_rgb_preview, family=family)


def taesd_preview_decoder(path: Path, device: torch.device | str = "cpu",
                          dtype: torch.dtype = torch.float32) -> PreviewDecoder:
    """TAESD: the tiny decoder at ``path``, run on ``device`` in ``dtype``; full-size image of the first latent."""
    device = torch.device(device)
    module = _taesd_module(path, device, dtype)

    def decode(latent: Tensor) -> Image.Image:
        with torch.no_grad():
            image = module(latent[:1].to(device=device, dtype=dtype))[0]
        return rgb_to_image(image.float() * 2.0 - 1.0)  # TAESD outputs [0, 1]

    return decode


def full_vae_decoder(model: Any, opts: Any = None) -> PreviewDecoder:
    """Full: the model's VAE, with its latent scale (and fp32 retry on NaN like the final decode)."""
    vae = model.vae
    nan_fallback = bool(getattr(opts, "auto_vae_precision", True))

    def decode(latent: Tensor) -> Image.Image:
        with torch.no_grad():
            image = vae.decode_latent(latent[:1].to(vae.dtype), nan_fallback=nan_fallback)[0]
        return rgb_to_image(torch.nan_to_num(image.float(), nan=0.0, posinf=1.0, neginf=-1.0))

    return decode


def _taesd_or_none(model: Any, paths: Any, family: str) -> PreviewDecoder | None:
    path = find_taesd_decoder(paths, family)
    if path is None:
        folder = vae_approx_dir(paths)
        where = str(folder) if folder is not None else "models/VAE-approx"
        _say_once(f"Live preview: TAESD needs {taesd_decoder_name(family)}.safetensors or .pth in {where} "
                  "(from github.com/madebyollin/taesd); using Approx cheap instead.")
        return None
    device = getattr(model, "device", torch.device("cpu"))
    dtype = getattr(model, "vae_dtype", torch.float32)
    try:
        return taesd_preview_decoder(path, device, dtype)
    except (AtelierError, OSError) as e:
        _say_once(f"Live preview: could not load {path.name} ({e}); using Approx cheap instead.")
        return None


def preview_decoder_for(model: Any, opts: Any, paths: Any = None) -> PreviewDecoder | None:
    """The decoder ``opts.show_progress_type`` asks for, for ``model``'s latent space; None if previews are off."""
    if not getattr(opts, "live_previews_enable", True):
        return None
    kind = getattr(opts, "show_progress_type", DEFAULT_PREVIEW_TYPE) or DEFAULT_PREVIEW_TYPE
    family = str(getattr(model, "family", "sd1"))
    if kind == "Full":
        return full_vae_decoder(model, opts)
    if kind == "TAESD":
        decoder = _taesd_or_none(model, paths, family)
        if decoder is not None:
            return decoder
    elif kind == "Approx NN":
        _say_once("Live preview: 'Approx NN' (A1111's VAE-approx model.pt) is not supported; using Approx cheap.")
    elif kind != DEFAULT_PREVIEW_TYPE:
        _say_once(f"Live preview: unknown method {kind!r} (choose one of {', '.join(PREVIEW_TYPES)}); "
                  "using Approx cheap.")
    return cheap_decoder(family)
