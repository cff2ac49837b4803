"""The weight-free preprocessors on real pictures (shapes from the demo model's dataset), the resolution rules, the
colour grid's exact construction, keypose drawing from keypoints, and the errors for bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atelier_preprocessors import (  # noqa: E402
    PreprocessorError,
    PreprocessorUnavailable,
    UnknownPreprocessor,
    list_preprocessors,
    preprocessor_info,
    preprocessor_params,
    run_preprocessor,
)
from atelier_preprocessors.keypose import OPENPOSE_TO_COCO  # noqa: E402

from modules.training.shapes_dataset import PALETTE, SIZES, ShapeSpec, render  # noqa: E402

SQUARE = ShapeSpec("square", "red", "blue", "center", "large")
# T2I's keypose colours in RGB (its mmpose drawing is BGR, turned to RGB by its loader)
LEFT, RIGHT, CENTRE = (0, 255, 0), (0, 128, 255), (255, 153, 51)


def square_bounds(size: int) -> tuple[float, float]:
    """Where the rendered centre square's sides are, in pixels (its half side is 0.75 x the shape radius)."""
    half = SIZES["large"] * size * 0.75
    return size / 2 - half, size / 2 + half


def test_registry_lists_every_preprocessor_with_slider_specs() -> None:
    names = list_preprocessors()
    for name in ("none", "canny", "shuffle", "lineart_standard", "color", "keypose", "binary", "invert", "midas",
                 "zoe", "openpose", "dwpose", "hed", "pidinet", "lineart", "lineart_anime", "mlsd", "normalbae",
                 "segmentation"):
        assert name in names
    canny = preprocessor_params("canny")
    assert canny["low_threshold"] == {"label": "Low threshold", "type": "slider", "value": 100, "min": 1, "max": 255,
                                      "step": 1}
    assert canny["high_threshold"]["value"] == 200
    assert preprocessor_params("color") == {}
    assert preprocessor_params("Threshold") == preprocessor_params("binary")  # an A1111 ControlNet alias
    dwpose = preprocessor_info("dwpose")
    assert dwpose["available"] is False and "mmpose" in dwpose["reason"]
    with pytest.raises(PreprocessorUnavailable, match="mmpose"):
        run_preprocessor("dwpose", render(SQUARE, 64), 64)


def test_canny_finds_the_edges_of_a_rendered_square() -> None:
    edges = run_preprocessor("canny", render(SQUARE, 64), 64)
    assert edges.shape == (64, 64, 3) and edges.dtype == np.uint8
    assert (edges[..., 0] == edges[..., 1]).all() and (edges[..., 0] == edges[..., 2]).all()
    ys, xs = np.nonzero(edges[..., 0])
    lo, hi = square_bounds(64)
    assert len(xs) > 40
    # every edge pixel lies on the square's outline, and the outline's four sides are all found
    on_outline = (np.minimum(np.abs(xs - lo), np.abs(xs - hi)) <= 2) | (np.minimum(np.abs(ys - lo), np.abs(ys - hi))
                                                                        <= 2)
    assert on_outline.all()
    assert abs(xs.min() - lo) <= 2 and abs(xs.max() - hi) <= 2 and abs(ys.min() - lo) <= 2 and abs(ys.max() - hi) <= 2
    inside = edges[int(lo) + 4:int(hi) - 4, int(lo) + 4:int(hi) - 4]
    assert not inside.any()


def test_resolution_scales_the_short_side_and_rounds_to_64() -> None:
    picture = cv2.resize(render(SQUARE, 64), (150, 100), interpolation=cv2.INTER_AREA)
    assert run_preprocessor("canny", picture, 128).shape == (128, 192, 3)
    assert run_preprocessor("none", picture, 512).shape == (512, 768, 3)
    assert run_preprocessor("none", picture, -1).shape == (128, 128, 3)  # own size: 100 and 150 round to 128
    square = render(SQUARE, 64)
    assert np.array_equal(run_preprocessor("none", square, 64), square)  # already at size: untouched
    for bad in (32, 4096):
        with pytest.raises(PreprocessorError, match="resolution must be between 64 and 2048"):
            run_preprocessor("canny", square, bad)
    with pytest.raises(PreprocessorError, match="pixel limit"):
        run_preprocessor("none", np.zeros((4, 2000, 3), np.uint8), 2048)


def test_color_grid_is_a_64x_cubic_shrink_then_nearest_enlargement() -> None:
    rng = np.random.default_rng(3)
    picture = (rng.uniform(0, 255, (2, 3, 3)).repeat(40, 0).repeat(50, 1)).astype(np.uint8)  # 80x150, 6 patches
    grid = run_preprocessor("color", picture, 128)
    assert grid.shape == (128, 256, 3)  # 80 → 128, 150 → 240 → rounded to 256
    at_size = cv2.resize(picture, (256, 128), interpolation=cv2.INTER_LANCZOS4)
    small = cv2.resize(at_size, (4, 2), interpolation=cv2.INTER_CUBIC)
    assert np.array_equal(grid, cv2.resize(small, (256, 128), interpolation=cv2.INTER_NEAREST))
    for by in range(2):
        for bx in range(4):
            block = grid[by * 64:(by + 1) * 64, bx * 64:(bx + 1) * 64]
            assert (block == small[by, bx]).all()
    # a plain picture stays exactly its colour
    blue = np.full((64, 64, 3), PALETTE["blue"], np.uint8)
    assert np.array_equal(run_preprocessor("color", blue, 64), blue)


def test_lineart_standard_draws_the_outline_of_a_dark_square_and_nothing_on_a_blank_page() -> None:
    picture = render(ShapeSpec("square", "black", "white", "center", "large"), 64)
    lines = run_preprocessor("lineart_standard", picture, 64, gaussian_sigma=2.0)
    lo, hi = square_bounds(64)
    strong = lines[..., 0] > 60
    ys, xs = np.nonzero(strong)
    assert len(xs) > 30
    assert ((xs > lo - 3) & (xs < hi + 3) & (ys > lo - 3) & (ys < hi + 3)).all()  # only at the square
    assert lines[:8, :8].max() == 0  # the page stays black
    blank = run_preprocessor("lineart_standard", np.full((64, 64, 3), 255, np.uint8), 64)
    assert blank.max() == 0  # no lines, and no NaN garbage from an empty median


def test_binary_threshold_invert_and_otsu() -> None:
    picture = render(ShapeSpec("square", "black", "white", "center", "large"), 64)
    binary = run_preprocessor("binary", picture, 64, threshold=127)
    assert set(np.unique(binary)) == {0, 255}
    assert binary[32, 32, 0] == 0 and binary[2, 2, 0] == 255
    inverted = run_preprocessor("threshold", picture, 64, threshold=127, invert=True)
    assert np.array_equal(inverted, 255 - binary)
    assert np.array_equal(run_preprocessor("binary", picture, 64, threshold=0), binary)  # Otsu on two colours
    assert np.array_equal(run_preprocessor("invert", picture, 64), 255 - picture)


def test_shuffle_keeps_the_colours_and_is_repeatable_with_a_seed() -> None:
    picture = render(SQUARE, 64)
    one = run_preprocessor("shuffle", picture, 64, seed=7, scale=32)
    assert np.array_equal(one, run_preprocessor("shuffle", picture, 64, seed=7, scale=32))
    assert not np.array_equal(one, run_preprocessor("shuffle", picture, 64, seed=8, scale=32))
    assert not np.array_equal(one, picture)
    # the pixels come from the picture: nearly all are blue or red (or a blend on the square's border)
    red, blue = np.array(PALETTE["red"]), np.array(PALETTE["blue"])
    near = np.minimum(np.abs(one - red).sum(-1), np.abs(one - blue).sum(-1)) < 30
    assert near.mean() > 0.8


def test_grey_and_transparent_inputs_become_rgb() -> None:
    grey = np.full((64, 64), 90, np.uint8)
    assert np.array_equal(run_preprocessor("none", grey, 64), np.full((64, 64, 3), 90, np.uint8))
    clear = np.zeros((64, 64, 4), np.uint8)
    assert (run_preprocessor("none", clear, 64) == 255).all()  # transparent is white, as controlnet-aux has it
    with pytest.raises(PreprocessorError, match="uint8"):
        run_preprocessor("canny", np.zeros((64, 64, 3), np.float32), 64)
    with pytest.raises(PreprocessorError, match="shape|must be"):
        run_preprocessor("canny", np.zeros((64, 64, 2), np.uint8), 64)


def test_unknown_names_and_bad_parameters_are_clear_errors() -> None:
    picture = render(SQUARE, 64)
    with pytest.raises(UnknownPreprocessor, match="'nope'.*canny"):
        run_preprocessor("nope", picture, 64)
    with pytest.raises(PreprocessorError, match="'sigma'.*low_threshold, high_threshold"):
        run_preprocessor("canny", picture, 64, sigma=3)
    with pytest.raises(PreprocessorError, match="between 1 and 255, got 300"):
        run_preprocessor("canny", picture, 64, low_threshold=300)
    with pytest.raises(PreprocessorError, match="whole number"):
        run_preprocessor("canny", picture, 64, low_threshold=10.5)
    with pytest.raises(PreprocessorError, match="true or false"):
        run_preprocessor("binary", picture, 64, invert="maybe")
    assert run_preprocessor("canny", picture, 64, low_threshold="50", high_threshold=150.0).shape == (64, 64, 3)


# keypose -----------------------------------------------------------------------------------------------------------
STANDING = [  # COCO order, pixels of a 128x128 picture
    (64, 20), (60, 17), (68, 17), (56, 19), (72, 19), (50, 35), (78, 35), (46, 52), (82, 52), (44, 68), (84, 68),
    (56, 70), (72, 70), (55, 92), (73, 92), (54, 114), (74, 114),
]


def midpoint(a: int, b: int, scale: float = 1.0) -> tuple[int, int]:
    (x1, y1), (x2, y2) = STANDING[a], STANDING[b]
    return int((y1 + y2) / 2 * scale), int((x1 + x2) / 2 * scale)


def test_keypose_draws_coco_skeletons_in_t2i_colours() -> None:
    canvas = np.zeros((128, 128, 3), np.uint8)
    pose = run_preprocessor("keypose", canvas, 128, keypoints=json.dumps([[list(p) + [0.9] for p in STANDING]]))
    assert pose.shape == (128, 128, 3)
    assert tuple(pose[midpoint(15, 13)]) == LEFT  # left shin
    assert tuple(pose[midpoint(16, 14)]) == RIGHT  # right shin
    assert tuple(pose[midpoint(7, 9)]) == LEFT and tuple(pose[midpoint(8, 10)]) == RIGHT  # forearms
    assert tuple(pose[midpoint(5, 11)]) == CENTRE  # torso side: the centre colour
    assert pose[0:8, 0:8].max() == 0 and (pose.sum(-1) > 0).mean() < 0.2  # thin lines on black

    # the same person as OpenPose JSON (18 points with a neck, on a canvas twice the size) draws the same
    openpose = np.zeros((18, 3))
    for coco, op in enumerate(OPENPOSE_TO_COCO):
        openpose[op] = (STANDING[coco][0] * 2, STANDING[coco][1] * 2, 0.9)
    openpose[1] = (128, 70, 0.9)  # the neck, which COCO lacks
    as_json = {"people": [{"pose_keypoints_2d": openpose.ravel().tolist()}], "canvas_width": 256,
               "canvas_height": 256}
    assert np.array_equal(run_preprocessor("keypose", canvas, 128, keypoints=as_json), pose)
    # and as fractions of the picture, drawn at twice the resolution
    fractions = [[[x / 128, y / 128] for x, y in STANDING]]
    big = run_preprocessor("keypose", canvas, 256, keypoints=fractions, radius=4, thickness=4)
    assert big.shape == (256, 256, 3) and tuple(big[midpoint(15, 13, 2.0)]) == LEFT


def test_keypose_skips_low_scores_and_rejects_malformed_keypoints() -> None:
    canvas = np.zeros((128, 128, 3), np.uint8)
    people = [[list(p) + [0.9] for p in STANDING]]
    people[0][15][2] = 0.0  # left ankle not seen: no point, no shin
    pose = run_preprocessor("keypose", canvas, 128, keypoints=people)
    assert tuple(pose[midpoint(15, 13)]) == (0, 0, 0) and tuple(pose[midpoint(16, 14)]) == RIGHT
    with pytest.raises(PreprocessorError, match="not valid JSON"):
        run_preprocessor("keypose", canvas, 128, keypoints="{people: ")
    with pytest.raises(PreprocessorError, match="17 or 18 points"):
        run_preprocessor("keypose", canvas, 128, keypoints=[[[1, 2, 1]] * 5])
