"""A deterministic judge of shape pictures: does the image show the prompt's colour, shape, background and position?

No learned model is involved, so the score means the same thing every time. For one picture (``analyze``):

* background: the median colour of a 2-pixel frame, named by the nearest palette colour;
* object: the largest connected region that differs from the background (picture upscaled 4x first, so contours of a
  64-pixel image are smooth), coloured by the median of its eroded interior and named by the nearest palette colour;
* shape: nearest prototype in (solidity, fill of the minimum-area rectangle, fill of the minimum enclosing circle),
  the prototypes being measured on the dataset's own renders at the working size;
* position: the named region whose centre is nearest to the object's centroid.

``score_images`` compares analyses with the specs they should show. ``evaluate_model`` generates the pictures through
the ordinary pipeline (``process_images``) for a balanced prompt set, several seeds and CFG scales.

Command line::

    python -m modules.training.evaluate models/demo/atelier-demo.safetensors [--prompts 24 --seeds 4 --cfg 7 1]
    python -m modules.training.evaluate --ground-truth     # self-check on dataset pictures: must be ~100 %
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from modules.training import shapes_dataset as ds

UPSCALE = 4
OBJECT_THRESHOLD = 50.0  # max-channel difference from the background; palette colours are >= ~100 apart
MIN_OBJECT_FRACTION = 0.005  # smaller regions are specks, not an object
CRITERIA = ("colour", "shape", "background", "position")


@dataclass(frozen=True)
class Analysis:
    """What the judge sees in one picture; ``shape``/``colour``/``position`` are None when no object was found."""

    background: str
    colour: str | None
    shape: str | None
    position: str | None
    area_fraction: float


def nearest_colour(rgb: np.ndarray) -> str:
    names = ds.COLOURS
    palette = np.array([ds.PALETTE[n] for n in names], dtype=np.float32)
    return names[int(np.argmin(((palette - rgb.astype(np.float32)) ** 2).sum(axis=1)))]


def shape_features(contour: np.ndarray) -> np.ndarray:
    """(solidity, area / min-area-rectangle area, area / min-enclosing-circle area) of a contour."""
    area = max(cv2.contourArea(contour), 1e-6)
    hull = max(cv2.contourArea(cv2.convexHull(contour)), 1e-6)
    (_, _), (w, h), _ = cv2.minAreaRect(contour)
    _, radius = cv2.minEnclosingCircle(contour)
    return np.array([area / hull, area / max(w * h, 1e-6), area / max(np.pi * radius**2, 1e-6)], dtype=np.float32)


def _largest_object(image: np.ndarray, background_rgb: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """(contour of the largest non-background region or None, its filled mask) in the upscaled picture."""
    big = cv2.resize(image, None, fx=UPSCALE, fy=UPSCALE, interpolation=cv2.INTER_LINEAR)
    difference = np.abs(big.astype(np.float32) - background_rgb[None, None]).max(axis=2)
    mask = (difference > OBJECT_THRESHOLD).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros_like(mask)
    if not contours:
        return None, filled
    contour = max(contours, key=cv2.contourArea)
    if cv2.contourArea(contour) < MIN_OBJECT_FRACTION * mask.size:
        return None, filled
    cv2.drawContours(filled, [contour], -1, 1, thickness=cv2.FILLED)
    return contour, filled & mask


def analyze(image: np.ndarray) -> Analysis:
    """Judge one RGB uint8 picture (H, W, 3)."""
    image = np.ascontiguousarray(image[..., :3])
    height, width = image.shape[:2]
    frame = np.concatenate([image[:2].reshape(-1, 3), image[-2:].reshape(-1, 3),
                            image[:, :2].reshape(-1, 3), image[:, -2:].reshape(-1, 3)])
    background_rgb = np.median(frame, axis=0)
    background = nearest_colour(background_rgb)
    contour, mask = _largest_object(image, background_rgb.astype(np.float32))
    if contour is None:
        return Analysis(background, None, None, None, 0.0)
    big = cv2.resize(image, None, fx=UPSCALE, fy=UPSCALE, interpolation=cv2.INTER_LINEAR)
    interior = cv2.erode(mask, np.ones((2 * UPSCALE + 1, 2 * UPSCALE + 1), np.uint8))
    pixels = big[interior.astype(bool)] if interior.any() else big[mask.astype(bool)]
    colour = nearest_colour(np.median(pixels, axis=0))
    moments = cv2.moments(contour)
    cx = moments["m10"] / max(moments["m00"], 1e-6) / (width * UPSCALE)
    cy = moments["m01"] / max(moments["m00"], 1e-6) / (height * UPSCALE)
    position = min(ds.POSITION_NAMES, key=lambda n: (ds.POSITIONS[n][0] - cx) ** 2 + (ds.POSITIONS[n][1] - cy) ** 2)
    return Analysis(background, colour, classify_shape(contour), position,
                    float(cv2.contourArea(contour)) / (height * width * UPSCALE**2))


@functools.cache
def shape_prototypes(size: int = 64) -> dict[str, np.ndarray]:
    """Mean features of each shape over the dataset's sizes, measured on clean renders at ``size`` pixels."""
    prototypes = {}
    for shape in ds.SHAPES:
        features = []
        for size_name in ds.SIZE_NAMES:
            for position in ds.POSITION_NAMES:
                spec = ds.ShapeSpec(shape, "white", "black", position, size_name)
                image = ds.render(spec, size)
                contour, _ = _largest_object(image, np.array(ds.PALETTE["black"], dtype=np.float32))
                assert contour is not None, "a clean render must contain its shape"
                features.append(shape_features(contour))
        prototypes[shape] = np.mean(features, axis=0)
    return prototypes


def classify_shape(contour: np.ndarray) -> str:
    features = shape_features(contour)
    prototypes = shape_prototypes()
    return min(prototypes, key=lambda name: float(((prototypes[name] - features) ** 2).sum()))


def score_images(images: Sequence[np.ndarray], specs: Sequence[ds.ShapeSpec]) -> dict[str, float]:
    """Fraction of pictures whose colour, shape, background and position match their specs (plus all four)."""
    if len(images) != len(specs) or not images:
        raise ValueError(f"need one spec per image and at least one image, got {len(images)} and {len(specs)}")
    hits = {name: 0 for name in (*CRITERIA, "all")}
    for image, spec in zip(images, specs, strict=True):
        seen = analyze(image)
        ok = {"colour": seen.colour == spec.colour, "shape": seen.shape == spec.shape,
              "background": seen.background == spec.background, "position": seen.position == spec.position}
        for name, good in ok.items():
            hits[name] += good
        hits["all"] += all(ok.values())
    return {name: count / len(images) for name, count in hits.items()}


def ground_truth_scores(count: int = 96, seed: int = 1234, size: int = 64) -> dict[str, dict[str, float]]:
    """The judge on dataset pictures: clean, blurred and at half resolution. Each should score ~100 %."""
    samples = ds.make_batch(seed, 0, count, size)
    images = [s.image for s in samples]
    specs = [s.spec for s in samples]
    blurred = [cv2.GaussianBlur(im, (5, 5), 1.0) for im in images]
    half = [cv2.resize(im, (size // 2, size // 2), interpolation=cv2.INTER_AREA) for im in images]
    return {"clean": score_images(images, specs), "blurred": score_images(blurred, specs),
            "half_size": score_images(half, specs)}


def noise_scores(count: int = 96, seed: int = 1234, size: int = 64) -> dict[str, float]:
    """The judge on uniform noise against balanced prompts: should be near chance."""
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(count)]
    return score_images(images, ds.canonical_specs(count, seed))


# --- generating through the pipeline --------------------------------------------------------------------------


@dataclass
class _Paths:
    """What ``process_images`` reads from ``p.paths``: no data folder (nothing saved), no hash cache file."""

    data_dir: str | None = None
    cache_file: str | None = None


def generate(model: Any, prompts: Sequence[str], seed: int, *, cfg_scale: float, steps: int = 20,
             sampler_name: str = "DPM++ 2M", size: int = 64, negative_prompt: str = "",
             unet_hooks: Any = None) -> list[np.ndarray]:
    """One picture per prompt (image i uses seed + i), through ``process_images`` like any UI or API request;
    ``unet_hooks`` (a ``UNetHooks``, e.g. adapter features) goes to every UNet call."""
    from modules.options import Options
    from modules.processing import StableDiffusionProcessingTxt2Img, process_images
    from modules.shared_options import options_templates
    from modules.shared_state import State

    p = StableDiffusionProcessingTxt2Img(
        sd_model=model, prompt=list(prompts), negative_prompt=negative_prompt, seed=seed, steps=steps,
        width=size, height=size, cfg_scale=cfg_scale, sampler_name=sampler_name, batch_size=len(prompts),
        do_not_save_samples=True, do_not_save_grid=True)
    p.opts, p.state, p.paths = Options(options_templates), State(), _Paths()
    p.unet_hooks = unet_hooks
    processed = process_images(p)
    return [np.asarray(image.convert("RGB")) for image in processed.images[processed.index_of_first_image:]]


def evaluate_model(model: Any, *, prompts: int = 24, seeds: int = 4, cfg_scales: Sequence[float] = (7.0, 1.0),
                   steps: int = 20, sampler_name: str = "DPM++ 2M", size: int = 64) -> dict[str, Any]:
    """Scores per CFG scale over ``prompts`` balanced canonical prompts x ``seeds`` seeds, and the seconds per image."""
    specs = ds.canonical_specs(prompts)
    texts = [ds.caption(spec) for spec in specs]
    results: dict[str, Any] = {"prompts": prompts, "seeds": seeds, "steps": steps, "sampler": sampler_name}
    for cfg in cfg_scales:
        images: list[np.ndarray] = []
        started = time.perf_counter()
        for s in range(seeds):
            images += generate(model, texts, 1000 * s, cfg_scale=cfg, steps=steps, sampler_name=sampler_name,
                               size=size)
        elapsed = time.perf_counter() - started
        scores = score_images(images, specs * seeds)
        results[f"cfg_{cfg:g}"] = {**scores, "seconds_per_image_batched": elapsed / len(images)}
    return results


def single_image_seconds(model: Any, steps: int = 20, size: int = 64, cfg_scale: float = 7.0) -> float:
    """Wall time of one picture at ``steps`` steps (best of three, after a warm-up)."""
    prompt = [ds.caption(ds.canonical_specs(1)[0])]
    generate(model, prompt, 0, cfg_scale=cfg_scale, steps=2, size=size)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        generate(model, prompt, 0, cfg_scale=cfg_scale, steps=steps, size=size)
        times.append(time.perf_counter() - started)
    return min(times)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help="a .safetensors checkpoint to judge")
    parser.add_argument("--ground-truth", action="store_true", help="self-check the judge on dataset pictures")
    parser.add_argument("--count", type=int, default=96, help="pictures per --ground-truth variant")
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--cfg", type=float, nargs="+", default=[7.0, 1.0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sampler", default="DPM++ 2M")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    args = parser.parse_args(argv)
    if args.ground_truth:
        report: dict[str, Any] = {"ground_truth": ground_truth_scores(args.count), "noise": noise_scores(args.count)}
    elif args.model:
        import torch

        from modules.sd.loader import load_model

        if args.threads:
            torch.set_num_threads(args.threads)
        path = Path(args.model)
        if not path.is_file():
            parser.error(f"no such checkpoint: {path}")
        model = load_model(path)
        report = evaluate_model(model, prompts=args.prompts, seeds=args.seeds, cfg_scales=args.cfg,
                                steps=args.steps, sampler_name=args.sampler)
        report["seconds_one_image"] = single_image_seconds(model, steps=args.steps)
    else:
        parser.error("give a checkpoint, or --ground-truth")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
