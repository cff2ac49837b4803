"""The procedural shapes dataset: same (seed, index) -> same picture and caption; captions say what is drawn."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from modules.training import shapes_dataset as ds


def test_samples_are_a_pure_function_of_seed_and_index() -> None:
    first = ds.make_batch(3, 10, 6)
    again = ds.make_batch(3, 10, 6)
    for a, b in zip(first, again, strict=True):
        assert a.caption == b.caption and a.spec == b.spec
        assert np.array_equal(a.image, b.image)
    # sample 12 does not depend on where a batch starts
    assert np.array_equal(ds.make_sample(3, 12).image, first[2].image)
    other_seed = ds.make_batch(4, 10, 6)
    assert [s.spec for s in other_seed] != [s.spec for s in first]
    assert first[0].image.shape == (64, 64, 3) and first[0].image.dtype == np.uint8


@pytest.mark.parametrize("template", range(len(ds.CAPTION_TEMPLATES)))
def test_every_caption_template_names_what_is_drawn(template: int) -> None:
    spec = ds.ShapeSpec("star", "yellow", "blue", "bottom left", "large")
    text = ds.caption(spec, template)
    for word in ("yellow star", "blue background", "bottom left"):
        assert word in text
    assert ds.caption(spec) == "a yellow star on a blue background, bottom left"


def test_pictures_match_their_labels() -> None:
    for sample in ds.make_batch(0, 0, 40):
        spec, image = sample.spec, sample.image.astype(int)
        assert spec.background != spec.colour
        assert spec.colour in sample.caption and spec.shape in sample.caption and spec.position in sample.caption
        corner = image[0, 0]
        assert np.abs(corner - ds.PALETTE[spec.background]).max() <= 1
        fx, fy = spec.centre()
        x, y = round(fx * 64), round(fy * 64)
        # the centre of every shape (the star's too: its inner radius is large enough) has the shape's colour
        assert np.abs(image[y, x] - ds.PALETTE[spec.colour]).max() <= 1, sample.caption
        in_shape = np.all(np.abs(image - ds.PALETTE[spec.colour]) <= 1, axis=2)
        ys, xs = np.nonzero(in_shape)
        assert abs(xs.mean() / 64 - fx) < 0.05 and abs(ys.mean() / 64 - fy) < 0.06


def test_shapes_have_their_geometric_areas() -> None:
    r = ds.SIZES["large"] * 64
    expected = {"circle": math.pi * (0.85 * r) ** 2, "square": (1.5 * r) ** 2, "triangle": 3 * math.sqrt(3) / 4 * r**2,
                "star": 5 * r * ds.STAR_INNER_RATIO * r * math.sin(math.radians(36))}
    for shape, area in expected.items():
        image = ds.render(ds.ShapeSpec(shape, "white", "black", "center", "large")).astype(float)
        drawn = (image.mean(axis=2) - ds.PALETTE["black"][0]) / (ds.PALETTE["white"][0] - ds.PALETTE["black"][0])
        assert drawn.sum() == pytest.approx(area, rel=0.05), shape


def test_draws_are_balanced_and_evaluation_specs_cover_every_pair() -> None:
    specs = [ds.random_spec(ds.sample_rng(1, i)) for i in range(2000)]
    for attribute, names in (("shape", ds.SHAPES), ("position", ds.POSITION_NAMES), ("colour", ds.COLOURS)):
        counts = Counter(getattr(s, attribute) for s in specs)
        assert set(counts) == set(names)
        assert max(counts.values()) < 1.35 * min(counts.values())
    evaluation = ds.canonical_specs(24)
    assert len({(s.shape, s.position) for s in evaluation}) == len(ds.SHAPES) * len(ds.POSITION_NAMES)
    assert Counter(s.colour for s in evaluation) == Counter({c: 3 for c in ds.COLOURS})
    assert all(s.colour != s.background and s.dx == s.dy == 0 for s in evaluation)
    assert ds.canonical_specs(24) == evaluation


def test_tensor_batch_is_in_the_vae_range() -> None:
    batch = ds.to_tensor_batch([ds.make_sample(0, i).image for i in range(3)])
    assert batch.shape == (3, 3, 64, 64)
    assert float(batch.min()) >= -1.0 and float(batch.max()) <= 1.0
