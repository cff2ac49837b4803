"""The original ``train_depth.py`` dataset layout: a meta file listing pictures, each with a condition and a caption.

Each non-empty line of the meta file (``#`` starts a comment) names a picture ``X.png`` (absolute, or relative to
the meta file's folder). Beside it: the condition map ``X.<condition>.png`` and the caption, the first line of
``X.txt``. Pictures load as RGB float in [0, 1]; conditions as RGB too (one-channel adapters take channel 0 later).
The original does no resizing; with ``size`` every picture is resized (short side) and centre-cropped to a square.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor


class DatasetError(ValueError):
    """The dataset folder is incomplete or inconsistent; the message names the files."""


@dataclass(frozen=True)
class Example:
    image: Path
    condition: Path
    caption_file: Path


def condition_path(image: Path, condition: str) -> Path:
    return image.with_name(f"{image.stem}.{condition}.png")


def read_meta(meta: Path, condition: str) -> list[Example]:
    """The examples a meta file lists; every missing file is reported at once."""
    meta = Path(meta)
    if not meta.is_file():
        raise DatasetError(f"The dataset list {meta} does not exist.")
    examples, missing = [], []
    for line in meta.read_text(encoding="utf8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        image = Path(line) if Path(line).is_absolute() else meta.parent / line
        example = Example(image, condition_path(image, condition), image.with_suffix(".txt"))
        missing += [str(p) for p in (example.image, example.condition, example.caption_file) if not p.is_file()]
        examples.append(example)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DatasetError(f"{len(missing)} dataset files are missing: {shown}.")
    if not examples:
        raise DatasetError(f"{meta} lists no pictures.")
    return examples


def _square(image: Image.Image, size: int, resample: Image.Resampling) -> Image.Image:
    scale = size / min(image.size)
    width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    image = image.resize((width, height), resample)
    left, top = (width - size) // 2, (height - size) // 2
    return image.crop((left, top, left + size, top + size))


def load_rgb(path: Path, size: int | None, resample: Image.Resampling) -> Tensor:
    """(3, H, W) float in [0, 1]."""
    with Image.open(path) as opened:
        image = opened.convert("RGB")
    if size is not None:
        image = _square(image, size, resample)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


class AdapterDataset:
    """Pictures, condition maps and captions by index; ``batch`` stacks several (all must share one size)."""

    def __init__(self, meta: Path, condition: str, size: int | None = None) -> None:
        self.condition = condition
        self.size = size
        self.examples = read_meta(meta, condition)

    def __len__(self) -> int:
        return len(self.examples)

    def load(self, index: int) -> tuple[Tensor, Tensor, str]:
        example = self.examples[index]
        image = load_rgb(example.image, self.size, Image.Resampling.BICUBIC)
        cond = load_rgb(example.condition, self.size, Image.Resampling.BILINEAR)
        if cond.shape != image.shape:
            raise DatasetError(f"{example.condition.name} is {cond.shape[2]}x{cond.shape[1]} but its picture is "
                               f"{image.shape[2]}x{image.shape[1]}.")
        caption = example.caption_file.read_text(encoding="utf8").splitlines()
        return image, cond, caption[0].strip() if caption else ""

    def batch(self, indices: list[int]) -> tuple[Tensor, Tensor, list[str]]:
        """(pictures (B, 3, H, W), conditions (B, 3, H, W), captions), values in [0, 1]."""
        items = [self.load(i) for i in indices]
        sizes = {tuple(image.shape) for image, _, _ in items}
        if len(sizes) > 1:
            raise DatasetError(f"A batch mixes picture sizes {sorted(sizes)}; use --resolution to resize them all.")
        return (torch.stack([i for i, _, _ in items]), torch.stack([c for _, c, _ in items]),
                [t for _, _, t in items])
