"""The OpenCV judge: ~100 % on the dataset's own pictures, chance on noise, and wrong answers for wrong prompts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modules.training import evaluate
from modules.training import shapes_dataset as ds


def test_ground_truth_pictures_score_at_least_95_percent() -> None:
    results = evaluate.ground_truth_scores(count=32)
    for variant in ("clean", "blurred", "half_size"):
        for criterion in evaluate.CRITERIA:
            assert results[variant][criterion] >= 0.95, (variant, criterion, results[variant])


def test_noise_scores_near_chance() -> None:
    scores = evaluate.noise_scores(count=48)
    assert scores["colour"] <= 0.3 and scores["background"] <= 0.3
    assert scores["shape"] <= 0.4 and scores["position"] <= 0.4
    assert scores["all"] <= 0.05


def test_each_attribute_is_judged_separately() -> None:
    spec = ds.ShapeSpec("triangle", "red", "green", "top right", "large")
    image = ds.render(spec)
    seen = evaluate.analyze(image)
    assert (seen.shape, seen.colour, seen.background, seen.position) == ("triangle", "red", "green", "top right")
    wrong = ds.ShapeSpec("circle", "blue", "green", "bottom left", "large")
    scores = evaluate.score_images([image], [wrong])
    assert scores == {"colour": 0.0, "shape": 0.0, "background": 1.0, "position": 0.0, "all": 0.0}


def test_a_plain_picture_has_no_object() -> None:
    blank = np.full((64, 64, 3), ds.PALETTE["pink"], dtype=np.uint8)
    seen = evaluate.analyze(blank)
    assert seen.background == "pink" and seen.shape is None and seen.colour is None and seen.position is None
    with pytest.raises(ValueError, match="one spec per image"):
        evaluate.score_images([blank], [])


def test_command_line_self_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert evaluate.main(["--ground-truth", "--count", "16"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ground_truth"]["clean"]["all"] == 1.0
    assert report["noise"]["all"] < 0.1
