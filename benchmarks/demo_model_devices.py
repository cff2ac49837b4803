"""The demo model on every device and dtype this machine has: the judge's scores and the seconds per picture.

    python benchmarks/demo_model_devices.py [--prompts 24 --seeds 2] [--compile]

It runs the whole pipeline (``process_images``) as the UI does, so on a GPU machine it is the check that the CUDA and
fp16 paths (and, with ``--compile``, torch.compile) draw the same pictures as fp32 on the CPU: the scores should agree
within a picture or two, since fp16 noise changes a few borderline shapes, never the colours.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modules.paths import DEMO_CHECKPOINT_DIR  # noqa: E402
from modules.sd.loader import load_model  # noqa: E402
from modules.training import shapes_dataset as ds  # noqa: E402
from modules.training.demo_model import CHECKPOINT_FILE  # noqa: E402
from modules.training.evaluate import generate, score_images  # noqa: E402


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(device: torch.device, dtype: torch.dtype, prompts: int, seeds: int, compile_unet: bool) -> dict[str, Any]:
    """Scores over a balanced prompt grid at CFG 7, and the wall time of the grid and of a single picture."""
    model = load_model(DEMO_CHECKPOINT_DIR / CHECKPOINT_FILE, device=device, dtype=dtype)
    if compile_unet:
        from modules.sd.compile import compile_unet as compiled

        model.extras["compiled_unet"] = compiled(model.unet)
    specs = ds.canonical_specs(prompts)
    texts = [ds.caption(spec) for spec in specs]
    generate(model, texts[:1], 0, cfg_scale=7.0, steps=2)  # warm-up (and compilation)
    synchronize(device)
    started = time.perf_counter()
    images = []
    for seed in range(seeds):
        images += generate(model, texts, 1000 * seed, cfg_scale=7.0)
    synchronize(device)
    grid_seconds = time.perf_counter() - started
    single = []
    for _ in range(3):
        started = time.perf_counter()
        generate(model, texts[:1], 0, cfg_scale=7.0)
        synchronize(device)
        single.append(time.perf_counter() - started)
    return {"device": str(device), "dtype": str(dtype).removeprefix("torch."), "compiled": compile_unet,
            **score_images(images, specs * seeds), "seconds_per_image_batched": grid_seconds / len(images),
            "seconds_one_image": min(single)}


def variants(compile_unet: bool) -> list[tuple[torch.device, torch.dtype, bool]]:
    found = [(torch.device("cpu"), torch.float32, False)]
    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        found += [(cuda, torch.float32, False), (cuda, torch.float16, False), (cuda, torch.bfloat16, False)]
        if compile_unet:
            found.append((cuda, torch.float16, True))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also run the CUDA fp16 UNet through torch.compile")
    args = parser.parse_args(argv)
    results = []
    for device, dtype, compiled in variants(args.compile):
        try:
            results.append(measure(device, dtype, args.prompts, args.seeds, compiled))
        except Exception as e:  # one failing variant is a finding, not the end of the report
            results.append({"device": str(device), "dtype": str(dtype), "compiled": compiled,
                            "error": f"{type(e).__name__}: {e}"})
        print(json.dumps(results[-1]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
