"""Procedural training data for the demo model: one coloured shape on a plain background, with its caption.

Every sample is a pure function of ``(seed, index)``: the same pair gives the same picture and caption on any machine,
so a training run can be resumed and an evaluation repeated without storing a dataset. A sample is described by a
:class:`ShapeSpec` (shape, colour, background, position, size, jitter); ``render`` draws it (4x supersampled, then
box-filtered, so edges are anti-aliased like the pictures a VAE reconstructs) and ``caption`` words it, e.g.
``"a red circle on a blue background, top left"``. The evaluator reads the same tables back, so labels and pictures
cannot drift apart.

Positions are balanced (uniform) and appear in several caption templates, both before and after the object, so the
causal text encoder sees position words in every part of the sentence (see ``demo_model_config`` for why).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# Well-separated sRGB colours (nearest pair, blue/purple, is ~120 apart) so that "which colour" is never ambiguous.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "yellow": (240, 220, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "purple": (150, 50, 170),
    "pink": (240, 130, 190),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
COLOURS = tuple(PALETTE)
SHAPES = ("circle", "square", "triangle", "star")
# Centre of each named region, as fractions of the image side (x, y).
POSITIONS: dict[str, tuple[float, float]] = {
    "top left": (0.25, 0.25),
    "top right": (0.75, 0.25),
    "bottom left": (0.25, 0.75),
    "bottom right": (0.75, 0.75),
    "center": (0.5, 0.5),
}
POSITION_NAMES = tuple(POSITIONS)
# Radius of the circle each shape is inscribed in, as a fraction of the image side.
SIZES: dict[str, float] = {"small": 0.15, "large": 0.21}
SIZE_NAMES = tuple(SIZES)
JITTER = 0.04  # +- fraction of the side added to the position (2.5 px at 64 px)
SUPERSAMPLE = 4
STAR_INNER_RATIO = 0.45

# (template, relative frequency). The first is the canonical form the evaluator prompts with.
CAPTION_TEMPLATES: tuple[tuple[str, float], ...] = (
    ("a {colour} {shape} on a {background} background, {position}", 0.45),
    ("{position}, a {colour} {shape} on a {background} background", 0.2),
    ("a {size} {colour} {shape} on a {background} background, {position}", 0.2),
    ("a {colour} {shape} in the {position} on a {background} background", 0.15),
)


@dataclass(frozen=True)
class ShapeSpec:
    """What one picture shows; ``dx``/``dy`` are the jitter in fractions of the image side."""

    shape: str
    colour: str
    background: str
    position: str
    size: str
    dx: float = 0.0
    dy: float = 0.0

    def centre(self) -> tuple[float, float]:
        """Centre of the shape in fractions of the side (x, y)."""
        x, y = POSITIONS[self.position]
        return x + self.dx, y + self.dy


@dataclass(frozen=True)
class Sample:
    """A rendered picture (H, W, 3) uint8, its caption and what it shows."""

    image: np.ndarray
    caption: str
    spec: ShapeSpec


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of sample ``index`` of dataset ``seed``: independent of every other index."""
    return np.random.default_rng([seed, index])


def random_spec(rng: np.random.Generator) -> ShapeSpec:
    """A uniformly drawn spec; the background is never the shape's colour."""
    colour = COLOURS[rng.integers(len(COLOURS))]
    backgrounds = [c for c in COLOURS if c != colour]
    return ShapeSpec(
        shape=SHAPES[rng.integers(len(SHAPES))],
        colour=colour,
        background=backgrounds[rng.integers(len(backgrounds))],
        position=POSITION_NAMES[rng.integers(len(POSITION_NAMES))],
        size=SIZE_NAMES[rng.integers(len(SIZE_NAMES))],
        dx=float(rng.uniform(-JITTER, JITTER)),
        dy=float(rng.uniform(-JITTER, JITTER)),
    )


def shape_polygon(shape: str, cx: float, cy: float, radius: float) -> list[tuple[float, float]]:
    """Vertices of a square, upward triangle or five-pointed star inscribed in a circle (image coordinates)."""
    if shape == "square":
        half = radius * 0.75
        return [(cx - half, cy - half), (cx + half, cy - half), (cx + half, cy + half), (cx - half, cy + half)]
    if shape == "triangle":
        # the circumcentre of an equilateral triangle is its centroid, so the shape's centre is (cx, cy)
        angles = [-90, 30, 150]
        return [(cx + radius * math.cos(math.radians(a)), cy + radius * math.sin(math.radians(a))) for a in angles]
    if shape == "star":
        points = []
        for k in range(10):
            r = radius if k % 2 == 0 else radius * STAR_INNER_RATIO
            a = math.radians(-90 + 36 * k)
            points.append((cx + r * math.cos(a), cy + r * math.sin(a)))
        return points
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def render(spec: ShapeSpec, size: int = 64) -> np.ndarray:
    """The picture of ``spec`` as (size, size, 3) uint8, anti-aliased by 4x supersampling."""
    big = size * SUPERSAMPLE
    image = Image.new("RGB", (big, big), PALETTE[spec.background])
    draw = ImageDraw.Draw(image)
    fx, fy = spec.centre()
    cx, cy, radius = fx * big, fy * big, SIZES[spec.size] * big
    colour = PALETTE[spec.colour]
    if spec.shape == "circle":
        r = radius * 0.85
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    else:
        draw.polygon(shape_polygon(spec.shape, cx, cy, radius), fill=colour)
    return np.asarray(image.resize((size, size), Image.Resampling.BOX))


def caption(spec: ShapeSpec, template: int = 0) -> str:
    """The caption of ``spec`` in template ``template`` (0: the canonical "a red circle on a blue background, ...")."""
    text, _ = CAPTION_TEMPLATES[template]
    return text.format(colour=spec.colour, shape=spec.shape, background=spec.background, position=spec.position,
                       size=spec.size)


def random_template(rng: np.random.Generator) -> int:
    weights = np.array([w for _, w in CAPTION_TEMPLATES])
    return int(rng.choice(len(weights), p=weights / weights.sum()))


def make_sample(seed: int, index: int, size: int = 64) -> Sample:
    """Sample ``index`` of dataset ``seed``: always the same picture and caption."""
    rng = sample_rng(seed, index)
    spec = random_spec(rng)
    return Sample(render(spec, size), caption(spec, random_template(rng)), spec)


def make_batch(seed: int, start: int, count: int, size: int = 64) -> list[Sample]:
    """Samples ``start .. start + count - 1`` of dataset ``seed``."""
    return [make_sample(seed, i, size) for i in range(start, start + count)]


def to_tensor_batch(images: list[np.ndarray]):  # -> torch.Tensor, kept lazy so the module imports without torch
    """uint8 pictures -> float tensor (N, 3, H, W) in [-1, 1], the VAE's input range."""
    import torch

    array = np.stack(images).astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


def canonical_specs(count: int, seed: int = 0) -> list[ShapeSpec]:
    """``count`` evaluation specs, balanced and without jitter.

    Shape ``i % 4`` with position ``i % 5`` meets every (shape, position) pair within 20 prompts; colours and sizes
    are balanced lists shuffled by a fixed generator; backgrounds are drawn from it (never the shape's colour).
    """
    rng = np.random.default_rng(seed)

    def balanced(names: tuple[str, ...]) -> list[str]:
        repeated = [names[i % len(names)] for i in range(count)]
        return [repeated[j] for j in rng.permutation(count)]

    colours, sizes = balanced(COLOURS), balanced(SIZE_NAMES)
    specs = []
    for i in range(count):
        backgrounds = [c for c in COLOURS if c != colours[i]]
        specs.append(ShapeSpec(
            shape=SHAPES[i % len(SHAPES)],
            colour=colours[i],
            background=backgrounds[int(rng.integers(len(backgrounds)))],
            position=POSITION_NAMES[i % len(POSITION_NAMES)],
            size=sizes[i],
        ))
    return specs
