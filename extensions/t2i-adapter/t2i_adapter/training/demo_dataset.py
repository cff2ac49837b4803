"""A training set for the demo adapter: the demo model's shape pictures with a mask and an edge map of each shape.

Pictures and captions come from ``modules.training.shapes_dataset`` (the data the demo model learnt), so the adapter
learns to put the shape where the condition map has it. For picture ``X``: ``X.png``, ``X.mask.png`` (white shape
on black, anti-aliased), ``X.edge.png`` (the mask's 1-2 pixel outline), ``X.txt`` (caption); ``meta.txt`` lists the
pictures. Every file is a pure function of (seed, index), like the shapes dataset itself.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from PIL import Image

from modules.training import shapes_dataset as ds

CONDITIONS = ("mask", "edge")


def shape_mask(spec: ds.ShapeSpec, size: int) -> np.ndarray:
    """(size, size) uint8: the shape drawn white on black at the picture's place."""
    return ds.render(dataclasses.replace(spec, colour="white", background="black"), size)[:, :, 0]


def mask_outline(mask: np.ndarray) -> np.ndarray:
    """(H, W) uint8 0/255: pixels inside the shape with a neighbour outside, or the reverse."""
    inside = mask >= 128
    padded = np.pad(inside, 1, mode="edge")
    neighbours = [padded[1 + dy : 1 + dy + inside.shape[0], 1 + dx : 1 + dx + inside.shape[1]]
                  for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    dilated, eroded = np.logical_or.reduce(neighbours), np.logical_and.reduce(neighbours)
    return ((dilated & ~eroded) * 255).astype(np.uint8)


def write_demo_dataset(folder: Path, count: int, seed: int = 7, size: int = 64) -> Path:
    """Write ``count`` examples under ``folder`` and return the meta file listing them."""
    folder = Path(folder)
    pictures = folder / "images"
    pictures.mkdir(parents=True, exist_ok=True)
    lines = []
    for index in range(count):
        sample = ds.make_sample(seed, index, size)
        stem = f"{index:06d}"
        mask = shape_mask(sample.spec, size)
        Image.fromarray(sample.image).save(pictures / f"{stem}.png")
        Image.fromarray(mask).save(pictures / f"{stem}.mask.png")
        Image.fromarray(mask_outline(mask)).save(pictures / f"{stem}.edge.png")
        (pictures / f"{stem}.txt").write_text(sample.caption + "\n", encoding="utf8")
        lines.append(f"images/{stem}.png")
    meta = folder / "meta.txt"
    meta.write_text("\n".join(lines) + "\n", encoding="utf8")
    return meta
