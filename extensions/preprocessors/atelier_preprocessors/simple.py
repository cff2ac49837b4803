"""Preprocessors without weights, written with OpenCV: each takes the picture at detection size, (H, W, 3) uint8 RGB,
and returns its map at the same size.

``canny`` and ``color`` follow T2I-Adapter's own preparation (Canny 100/200; the colour "spatial palette" is a cubic
shrink to 1/64 and a nearest-neighbour enlargement back); ``shuffle`` and ``lineart_standard`` do what controlnet-aux's
detectors of those names do, without importing controlnet-aux (a 4-s import) for a few lines of OpenCV.
"""

from __future__ import annotations

import cv2
import numpy as np

COLOR_BLOCK = 64


def passthrough(image: np.ndarray) -> np.ndarray:
    """``none``: the picture itself, for maps made elsewhere."""
    return image


def canny(image: np.ndarray, low_threshold: int, high_threshold: int) -> np.ndarray:
    """White one-pixel edges on black (the canny adapters and ControlNet take this)."""
    return cv2.Canny(image, int(low_threshold), int(high_threshold))


def color_grid(image: np.ndarray) -> np.ndarray:
    """T2I's colour condition: cubic shrink to (W//64, H//64), nearest enlargement back, so each 64x64 block is flat."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, w // COLOR_BLOCK), max(1, h // COLOR_BLOCK)), interpolation=cv2.INTER_CUBIC)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, scale: int) -> np.ndarray:
    """Noise in [0, 1] that varies over about ``scale`` pixels: coarse uniform noise, cubic-enlarged, cropped."""
    coarse = rng.uniform(0.0, 1.0, size=(h // scale + 2, w // scale + 2))
    big = cv2.resize(coarse, (w + 2 * scale, h + 2 * scale), interpolation=cv2.INTER_CUBIC)
    crop = big[scale:scale + h, scale:scale + w]
    crop = crop - crop.min()
    return crop / max(float(crop.max()), 1e-6)


def content_shuffle(image: np.ndarray, scale: int, seed: int) -> np.ndarray:
    """Pixels moved along a smooth random flow: colours and textures stay, the layout goes (shuffle ControlNet)."""
    h, w = image.shape[:2]
    rng = np.random.default_rng(None if seed < 0 else seed)
    map_x = (_smooth_noise(rng, h, w, scale) * (w - 1)).astype(np.float32)
    map_y = (_smooth_noise(rng, h, w, scale) * (h - 1)).astype(np.float32)
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR)


def lineart_standard(image: np.ndarray, gaussian_sigma: float, intensity_threshold: int) -> np.ndarray:
    """Lines as "darker than the blurred neighbourhood", scaled by the median line strength (white on black)."""
    x = image.astype(np.float32)
    blurred = cv2.GaussianBlur(x, (0, 0), float(gaussian_sigma))
    intensity = np.min(blurred - x, axis=2).clip(0, 255)
    strong = intensity[intensity > intensity_threshold]
    scale = max(16.0, float(np.median(strong))) if strong.size else 16.0  # a blank picture has no lines, not NaNs
    return (intensity / scale * 127.0).clip(0, 255).astype(np.uint8)


def binary(image: np.ndarray, threshold: int, invert: bool) -> np.ndarray:
    """White where the grey value is above ``threshold`` (0: Otsu's choice), else black; ``invert`` swaps them."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    mode = cv2.THRESH_BINARY_INV if invert else cv2.THRESH_BINARY
    if threshold <= 0:
        _, out = cv2.threshold(grey, 0, 255, mode | cv2.THRESH_OTSU)
    else:
        _, out = cv2.threshold(grey, int(threshold), 255, mode)
    return out


def invert(image: np.ndarray) -> np.ndarray:
    """Negative: black lines on white paper become the white-on-black lines sketch and lineart models expect."""
    return 255 - image
