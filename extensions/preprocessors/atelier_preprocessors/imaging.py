"""Image plumbing shared by every preprocessor: input checks, the detection size, resizing, 3-channel maps.

Resolution follows controlnet-aux's habit so maps match what ControlNet/T2I users know: the short side is scaled to
the requested resolution and each side is rounded to the nearest multiple of 64 (at least 64); shrinking uses area
averaging, enlarging Lanczos. The map comes back at that detection size; callers resize it to their picture.
"""

from __future__ import annotations

import cv2
import numpy as np

from .errors import PreprocessorError

MIN_RESOLUTION = 64
MAX_RESOLUTION = 2048
MAX_PIXELS = 2 * MAX_RESOLUTION * MAX_RESOLUTION
SIZE_MULTIPLE = 64


def as_rgb_uint8(image: object) -> np.ndarray:
    """The input as a contiguous (H, W, 3) uint8 RGB array; grey becomes RGB, alpha is composited on white."""
    if not isinstance(image, np.ndarray):
        raise PreprocessorError(f"The image must be a numpy array, got {type(image).__name__}.")
    if image.dtype != np.uint8:
        raise PreprocessorError(f"The image must be uint8 (0-255), got {image.dtype}.")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise PreprocessorError(f"The image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}.")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise PreprocessorError(f"The image is empty ({image.shape[1]}x{image.shape[0]}).")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.shape[2] == 4:
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        image = (image[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(image)


def detection_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    """(H, W) the detector runs at: short side scaled to ``resolution`` (<= 0: the image's own), sides rounded to 64."""
    resolution = int(resolution)
    if resolution <= 0:
        resolution = max(MIN_RESOLUTION, min(MAX_RESOLUTION, min(height, width)))
    if not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise PreprocessorError(f"The resolution must be between {MIN_RESOLUTION} and {MAX_RESOLUTION}, "
                                f"got {resolution}.", "Use e.g. 512 (or -1 for the image's own size).")
    scale = resolution / min(height, width)
    h = max(SIZE_MULTIPLE, int(round(height * scale / SIZE_MULTIPLE)) * SIZE_MULTIPLE)
    w = max(SIZE_MULTIPLE, int(round(width * scale / SIZE_MULTIPLE)) * SIZE_MULTIPLE)
    if h * w > MAX_PIXELS:
        raise PreprocessorError(f"A {width}x{height} image at resolution {resolution} would be {w}x{h} pixels, "
                                f"more than the {MAX_PIXELS}-pixel limit.", "Crop the image or lower the resolution.")
    return h, w


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` at (H, W): area averaging when it shrinks, Lanczos when it grows, unchanged when it fits."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    shrinking = h <= image.shape[0] and w <= image.shape[1]
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LANCZOS4)


def as_map(detected: object, size: tuple[int, int]) -> np.ndarray:
    """A detector's output as a contiguous (H, W, 3) uint8 map at ``size`` (grey repeated, bilinear if resized)."""
    array = np.asarray(detected)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise PreprocessorError(f"The detector returned an array of shape {array.shape}, not a picture.")
    h, w = size
    if array.shape[:2] != (h, w):
        array = cv2.resize(array, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(array)
