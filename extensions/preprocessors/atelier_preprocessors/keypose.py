"""T2I-Adapter's keypose condition: COCO 17-keypoint skeletons drawn mmpose-style on black.

The keypose adapter was trained on mmpose HRNet drawings, and its authors say the colours matter: head points and
links in orange, the body's left side green, its right side blue, points of radius 2 first, then links 2 px wide
(T2I's ``imshow_keypoints``, whose BGR colours its loader turns to RGB; the RGB values are used here). mmpose is not
installable here, so the keypoints come either from the caller (OpenPose JSON or plain lists) or from the OpenPose
body model, whose 18 points are mapped onto COCO's 17.
"""

from __future__ import annotations

import json
from typing import Any

import cv2
import numpy as np

from .errors import PreprocessorError

COCO_POINTS = 17
OPENPOSE_POINTS = 18
# COCO keypoint i is OpenPose body point OPENPOSE_TO_COCO[i] (OpenPose has a neck and orders eyes/ears differently).
OPENPOSE_TO_COCO = (0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10)

CENTRE, LEFT, RIGHT = (255, 153, 51), (0, 255, 0), (0, 128, 255)
POINT_COLOURS = (CENTRE,) * 5 + (LEFT, RIGHT) * 6
SKELETON = (
    ((15, 13), LEFT), ((13, 11), LEFT), ((16, 14), RIGHT), ((14, 12), RIGHT), ((11, 12), CENTRE), ((5, 11), CENTRE),
    ((6, 12), CENTRE), ((5, 6), CENTRE), ((5, 7), LEFT), ((6, 8), RIGHT), ((7, 9), LEFT), ((8, 10), RIGHT),
    ((1, 2), CENTRE), ((0, 1), CENTRE), ((0, 2), CENTRE), ((1, 3), CENTRE), ((2, 4), CENTRE), ((3, 5), CENTRE),
    ((4, 6), CENTRE),
)
FORMAT_HINT = ('Send OpenPose JSON ({"people": [{"pose_keypoints_2d": [x, y, score, ...]}], "canvas_width": W, '
               '"canvas_height": H}) or a list of people, each a list of 17 COCO (or 18 OpenPose) [x, y, score] '
               "points; coordinates in pixels of the image (or canvas), or all within 0-1 for fractions.")


def openpose_to_coco(points: np.ndarray) -> np.ndarray:
    """(18, 3) OpenPose body points → (17, 3) COCO points (the neck is dropped)."""
    return points[list(OPENPOSE_TO_COCO)]


def _person(value: Any) -> np.ndarray:
    """One person as (17, 3) COCO points: x, y, score (missing points have score 0)."""
    if isinstance(value, dict):
        value = value.get("pose_keypoints_2d", value.get("keypoints"))
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise PreprocessorError(f"A person's keypoints are not numbers: {str(value)[:80]}.", FORMAT_HINT) from None
    if array.ndim == 1:
        dims = 3 if array.size in (COCO_POINTS * 3, OPENPOSE_POINTS * 3) else 2
        if array.size % dims:
            raise PreprocessorError(f"A flat keypoint list has {array.size} numbers, not 17 or 18 points.",
                                    FORMAT_HINT)
        array = array.reshape(-1, dims)
    if array.ndim != 2 or array.shape[1] not in (2, 3) or array.shape[0] not in (COCO_POINTS, OPENPOSE_POINTS):
        raise PreprocessorError(f"A person has keypoints of shape {array.shape}; expected 17 or 18 points of "
                                "[x, y] or [x, y, score].", FORMAT_HINT)
    if array.shape[1] == 2:
        array = np.concatenate([array, np.ones((array.shape[0], 1))], axis=1)
    missing = (array[:, 0] < 0) | (array[:, 1] < 0) | ((array[:, 0] == 0) & (array[:, 1] == 0))
    array[missing, 2] = 0.0  # OpenPose writes absent points as 0, 0, 0; controlnet-aux as -1
    return openpose_to_coco(array) if array.shape[0] == OPENPOSE_POINTS else array


def _is_one_person(value: list) -> bool:
    """A flat list of numbers, or 17/18 [x, y(, score)] points, is one person rather than a list of people."""
    if not value:
        return False
    first = value[0]
    if isinstance(first, int | float):
        return True
    return (isinstance(first, list | tuple) and bool(first) and isinstance(first[0], int | float)
            and len(value) in (COCO_POINTS, OPENPOSE_POINTS))


def parse_keypoints(value: Any, image_size: tuple[int, int]) -> list[np.ndarray]:
    """People as (17, 3) COCO points in pixels of an image of ``image_size`` (W, H); see FORMAT_HINT for inputs."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise PreprocessorError(f"The keypoints are not valid JSON ({e}).", FORMAT_HINT) from None
    canvas = None
    if isinstance(value, dict):
        if "canvas_width" in value and "canvas_height" in value:
            canvas = (float(value["canvas_width"]), float(value["canvas_height"]))
        if "people" not in value:
            raise PreprocessorError("The keypoints JSON has no 'people' list.", FORMAT_HINT)
        value = value["people"]
    if not isinstance(value, list):
        raise PreprocessorError(f"The keypoints must be a list of people, got {type(value).__name__}.", FORMAT_HINT)
    people = [_person(value)] if _is_one_person(value) else [_person(p) for p in value]
    width, height = image_size
    for person in people:
        seen = person[person[:, 2] > 0, :2]
        if canvas is not None:
            person[:, 0] *= width / canvas[0]
            person[:, 1] *= height / canvas[1]
        elif seen.size and float(np.abs(seen).max()) <= 1.0:
            person[:, 0] *= width
            person[:, 1] *= height
    return people


def draw_keypose(size: tuple[int, int], people: list[np.ndarray], radius: int = 2, thickness: int = 2,
                 score_threshold: float = 0.1) -> np.ndarray:
    """The people on a black (H, W, 3) canvas of ``size`` (H, W): points first, then the links between them."""
    h, w = size
    canvas = np.zeros((h, w, 3), dtype=np.uint8)
    for person in people:
        for (x, y, score), colour in zip(person, POINT_COLOURS, strict=True):
            if score >= score_threshold:
                cv2.circle(canvas, (int(x), int(y)), int(radius), colour, -1)
        for (a, b), colour in SKELETON:
            p, q = person[a], person[b]
            inside = all(0 < pt[0] < w and 0 < pt[1] < h for pt in (p, q))
            if inside and p[2] >= score_threshold and q[2] >= score_threshold:
                cv2.line(canvas, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), colour, thickness=int(thickness))
    return canvas


def scale_people(people: list[np.ndarray], from_size: tuple[int, int], to_size: tuple[int, int]) -> list[np.ndarray]:
    """Pixel keypoints of a (W, H) image moved onto a (W', H') one."""
    sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    return [person * np.array([sx, sy, 1.0]) for person in people]
