"""Upscalers: A1111's latent upscale modes (hires fix) and its pixel upscalers ("None", "Lanczos", "Nearest" and
ESRGAN-family model files).

Why one module: hires fix and the "Extras" tab pick an upscaler by the name A1111 shows ("Latent (bicubic)",
"R-ESRGAN 4x+", a file's stem), so names, resize rules and model loading live together. Model files are read with
our restricted unpickler (`modules.sd.checkpoint`) and built by spandrel, which recognises the architecture from the
state dict; inference runs in overlapping tiles so big images fit in memory.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from modules.errors import BadCheckpoint, MissingWeights, ModelNotFound
from modules.sd.checkpoint import read_state_dict

LATENT_FACTOR = 8
"""Pixels per latent cell in SD's VAE (A1111's `opt_f`)."""

latent_upscale_modes: dict[str, dict[str, Any]] = {
    "Latent": {"mode": "bilinear", "antialias": False},
    "Latent (antialiased)": {"mode": "bilinear", "antialias": True},
    "Latent (bicubic)": {"mode": "bicubic", "antialias": False},
    "Latent (bicubic antialiased)": {"mode": "bicubic", "antialias": True},
    "Latent (nearest)": {"mode": "nearest", "antialias": False},
    "Latent (nearest-exact)": {"mode": "nearest-exact", "antialias": False},
}
"""A1111's `shared.latent_upscale_modes`: hires-fix upscaler name -> `F.interpolate` arguments."""

MODEL_EXTENSIONS = (".pth", ".pt", ".safetensors")
"""File types A1111's ESRGAN upscaler picks up from `models/ESRGAN`."""

KNOWN_MODEL_NAMES: dict[str, tuple[str, int]] = {
    "RealESRGAN_x4plus": ("R-ESRGAN 4x+", 4),
    "RealESRGAN_x4plus_anime_6B": ("R-ESRGAN 4x+ Anime6B", 4),
    "RealESRGAN_x2plus": ("R-ESRGAN 2x+", 2),
    "realesr-general-x4v3": ("R-ESRGAN General 4xV3", 4),
    "realesr-general-wdn-x4v3": ("R-ESRGAN General WDN 4xV3", 4),
    "realesr-animevideov3": ("R-ESRGAN AnimeVideo", 4),
}
"""File stems A1111 downloads for its Real-ESRGAN upscaler, and the names it lists them under."""

DEFAULT_TILE_SIZE = 192
DEFAULT_TILE_OVERLAP = 8
"""A1111's `ESRGAN_tile` / `ESRGAN_tile_overlap` defaults (pixels of the input image)."""

BUILTIN_KINDS = ("none", "lanczos", "nearest")


def is_latent_upscaler(name: str | None) -> bool:
    """Whether a hires-fix upscaler name is one of the latent modes (no decode/encode round trip)."""
    return name in latent_upscale_modes


def upscale_latent(latent: Tensor, mode_name: str, height: int, width: int) -> Tensor:
    """Resize a latent batch to the latent size of a `width`x`height` picture with a named latent mode.

    `height`/`width` are pixel sizes, as A1111's hires fix passes them (`target // opt_f` inside).
    """
    if mode_name not in latent_upscale_modes:
        raise ModelNotFound(f"Unknown latent upscale mode {mode_name!r}.",
                            f"Use one of: {', '.join(latent_upscale_modes)}.")
    spec = latent_upscale_modes[mode_name]
    size = (height // LATENT_FACTOR, width // LATENT_FACTOR)
    # Half-precision bicubic/antialiased kernels are missing on CPU: compute those in float32.
    work = latent.float() if latent.device.type == "cpu" and latent.dtype != torch.float32 else latent
    out = torch.nn.functional.interpolate(work, size=size, mode=spec["mode"], antialias=spec["antialias"])
    return out.to(latent.dtype)


# --- pixel upscalers -------------------------------------------------------------------------------------------


@dataclass(eq=False)
class UpscalerData:
    """One entry of A1111's upscaler list: a name, where its weights are, its native scale and (once loaded) model.

    `kind` is "none", "lanczos", "nearest" or "model" (a spandrel-loadable file at `path`). The object is itself the
    upscaler: `upscale(image, scale)` follows A1111's `Upscaler.upscale` (repeat the model up to 3 times until the
    target is reached, then Lanczos to `size*scale` rounded down to a multiple of 8).
    """

    name: str
    path: Path | None = None
    scale: float = 4
    model: Any = None
    kind: str = "model"
    tile_size: int = DEFAULT_TILE_SIZE
    tile_overlap: int = DEFAULT_TILE_OVERLAP
    device: torch.device | str = "cpu"
    allow_unsafe: bool = False

    def load(self) -> Any:
        """The spandrel model descriptor, loaded on first use and kept; its scale replaces the guessed one."""
        if self.kind != "model":
            return None
        if self.model is None:
            if self.path is None:
                raise MissingWeights(f"Upscaler {self.name!r} has no model file.")
            self.model = load_upscaler_model(self.path, device=self.device, allow_unsafe=self.allow_unsafe)
            self.scale = self.model.scale
        return self.model

    def unload(self) -> None:
        """Free the model's memory; the next upscale loads it again."""
        self.model = None

    def do_upscale(self, image: Image.Image, scale: float) -> Image.Image:
        """One pass: the model's own factor, or a plain resize by `scale` for the built-in resamplers."""
        if self.kind == "none":
            return image
        if self.kind in ("lanczos", "nearest"):
            resample = Image.Resampling.LANCZOS if self.kind == "lanczos" else Image.Resampling.NEAREST
            return image.resize((int(image.width * scale), int(image.height * scale)), resample=resample)
        return upscale_with_model(self.load(), image, tile_size=self.tile_size, tile_overlap=self.tile_overlap)

    def upscale(self, image: Image.Image, scale: float) -> Image.Image:
        """`image` enlarged by `scale`, to A1111's size: `int(w*scale)//8*8` x `int(h*scale)//8*8`."""
        dest_w = int((image.width * scale) // 8 * 8)
        dest_h = int((image.height * scale) // 8 * 8)
        for attempt in range(3):
            if image.width >= dest_w and image.height >= dest_h and (attempt > 0 or scale != 1):
                break
            before = image.size
            image = self.do_upscale(image, scale)
            if image.size == before:
                break
        if image.size != (dest_w, dest_h):
            image = image.resize((dest_w, dest_h), resample=Image.Resampling.LANCZOS)
        return image


def builtin_upscalers() -> list[UpscalerData]:
    """A1111's always-present entries, in its order: "None", "Lanczos", "Nearest"."""
    return [UpscalerData("None", kind="none"), UpscalerData("Lanczos", kind="lanczos"),
            UpscalerData("Nearest", kind="nearest")]


def model_display_name(path: Path) -> tuple[str, int]:
    """The name A1111 lists a model file under, and its scale guessed from the name (4 unless it says otherwise)."""
    stem = path.stem
    if stem in KNOWN_MODEL_NAMES:
        return KNOWN_MODEL_NAMES[stem]
    match = re.search(r"(?:^|[^a-z0-9])(\d)x|x(\d)(?:[^a-z0-9]|$)", stem.lower())
    scale = int(match.group(1) or match.group(2)) if match else 4
    return stem, scale if scale > 0 else 4


def list_upscalers(dirs: Iterable[str | Path], *, device: torch.device | str = "cpu",
                   allow_unsafe: bool = False) -> list[UpscalerData]:
    """Built-ins first, then every model file under `dirs` (searched recursively), sorted by name like A1111.

    Nothing is loaded here; a file's scale is guessed from its name until the model is loaded.
    """
    found: dict[str, UpscalerData] = {}
    for folder in dirs:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() not in MODEL_EXTENSIONS or not path.is_file():
                continue
            name, scale = model_display_name(path)
            found.setdefault(name, UpscalerData(name, path, scale, device=device, allow_unsafe=allow_unsafe))
    models = sorted(found.values(), key=lambda u: u.name.lower())
    return builtin_upscalers() + models


def find_upscaler(upscalers: Iterable[UpscalerData], name: str | None) -> UpscalerData:
    """The entry called `name` (exact, then case-insensitive); `None`/"" means "None"."""
    upscalers = list(upscalers)
    wanted = name or "None"
    for candidates in ((u for u in upscalers if u.name == wanted),
                       (u for u in upscalers if u.name.lower() == wanted.lower())):
        for upscaler in candidates:
            return upscaler
    names = ", ".join(u.name for u in upscalers)
    raise ModelNotFound(f"Upscaler {wanted!r} not found.",
                        f"Available: {names}. Put ESRGAN-family models in models/ESRGAN.")


def load_upscaler_model(path: str | Path, *, device: torch.device | str = "cpu", allow_unsafe: bool = False) -> Any:
    """A spandrel `ImageModelDescriptor` in eval mode for a model file; typed errors name the file."""
    from spandrel import ImageModelDescriptor, ModelLoader, UnsupportedModelError

    path = Path(path)
    if not path.is_file():
        raise MissingWeights(f"Upscaler model file {path} is missing.",
                             "Put the model file in models/ESRGAN or pick another upscaler.")
    state_dict = read_state_dict(path, allow_unsafe=allow_unsafe)
    if not state_dict:
        raise BadCheckpoint(f"{path.name} contains no weights.", "The file may be corrupt or not an upscaler model.")
    try:
        descriptor = ModelLoader().load_from_state_dict(state_dict)
    except UnsupportedModelError as e:
        raise BadCheckpoint(f"{path.name} is not an upscaler architecture Atelier knows (ESRGAN, Real-ESRGAN, ...).",
                            "Use an ESRGAN-family .pth or .safetensors model.") from e
    except Exception as e:  # wrong shapes, missing keys: a damaged or mislabelled file
        raise BadCheckpoint(f"{path.name} could not be loaded as an upscaler: {type(e).__name__}: {e}") from e
    if not isinstance(descriptor, ImageModelDescriptor):
        raise BadCheckpoint(f"{path.name} is a {descriptor.architecture.name} model, not an image upscaler.")
    return descriptor.to(device).eval()


def _edge_ramp(length: int, ramp: int, lead: bool, trail: bool) -> Tensor:
    """1 inside, rising linearly over `ramp` cells on the sides that overlap a neighbouring tile."""
    weight = torch.ones(length)
    if ramp > 0:
        steps = (torch.arange(min(ramp, length), dtype=torch.float32) + 0.5) / ramp
        if lead:
            weight[: len(steps)] = torch.minimum(weight[: len(steps)], steps)
        if trail:
            weight[length - len(steps):] = torch.minimum(weight[length - len(steps):], steps.flip(0))
    return weight


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one axis: stride `tile - overlap`, the last tile flush with the end."""
    if size <= tile:
        return [0]
    stride = max(tile - overlap, 1)
    count = math.ceil((size - tile) / stride) + 1
    return sorted({min(i * stride, size - tile) for i in range(count)})


def upscale_tensor_tiled(model: Callable[[Tensor], Tensor], image: Tensor, *, tile_size: int,
                         tile_overlap: int) -> Tensor:
    """`model(image)` computed tile by tile; overlapping borders are cross-faded so no seams show.

    `image` is (B, C, H, W); the model's scale is read from the first tile's output.
    """
    _, _, height, width = image.shape
    if tile_size <= 0 or (height <= tile_size and width <= tile_size):
        return model(image)
    overlap = min(tile_overlap, tile_size // 2)
    ys, xs = _tile_starts(height, tile_size, overlap), _tile_starts(width, tile_size, overlap)
    out = weights = None
    scale = 1
    for y in ys:
        for x in xs:
            tile = image[:, :, y:y + tile_size, x:x + tile_size]
            result = model(tile)
            if out is None:
                scale = result.shape[-1] // tile.shape[-1]
                out = result.new_zeros(result.shape[0], result.shape[1], height * scale, width * scale)
                weights = result.new_zeros(1, 1, height * scale, width * scale)
            th, tw = result.shape[-2:]
            wy = _edge_ramp(th, overlap * scale, y > 0, y + tile.shape[-2] < height)
            wx = _edge_ramp(tw, overlap * scale, x > 0, x + tile.shape[-1] < width)
            mask = (wy[:, None] * wx[None, :]).to(result)[None, None]
            oy, ox = y * scale, x * scale
            out[:, :, oy:oy + th, ox:ox + tw] += result * mask
            weights[:, :, oy:oy + th, ox:ox + tw] += mask
    return out / weights.clamp_min(1e-6)


def upscale_with_model(model: Any, image: Image.Image, *, tile_size: int = DEFAULT_TILE_SIZE,
                       tile_overlap: int = DEFAULT_TILE_OVERLAP) -> Image.Image:
    """Run an image model on a PIL image, tiled. Channels go in BGR order, as A1111 feeds ESRGAN-family models."""
    parameter = next(iter(model.model.parameters()), None) if hasattr(model, "model") else None
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None else torch.float32
    rgb = torch.from_numpy(np.array(image.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1)
    bgr = rgb.flip(0).unsqueeze(0).to(device=device, dtype=dtype).div(255.0)
    with torch.inference_mode():
        result = upscale_tensor_tiled(model, bgr, tile_size=tile_size, tile_overlap=tile_overlap)
    array = result[0].flip(0).float().clamp(0, 1).mul(255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, "RGB")
