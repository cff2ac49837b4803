"""The shipped demo adapter on the shipped demo model: the shape lands where the condition mask puts it.

Prompts carry no position word, so without the adapter the model puts the shape wherever the noise leads (chance
level); with the adapter's features injected, the generated object must cover the mask (IoU >= 0.6) on >= 80 % of a
fixed grid. The adapter was trained by this extension's own ``train_adapter.py`` (see ``models/README.md``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

EXTENSION = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(EXTENSION))

from t2i_adapter import compute_features, load_adapter, unet_hooks_for  # noqa: E402
from t2i_adapter.training.demo_dataset import shape_mask  # noqa: E402

from modules.paths import DEMO_CHECKPOINT_DIR  # noqa: E402
from modules.training import shapes_dataset as ds  # noqa: E402
from modules.training.demo_model import CHECKPOINT_FILE  # noqa: E402
from modules.training.evaluate import generate  # noqa: E402

DEMO_ADAPTER = EXTENSION / "models" / "t2iadapter_demo_mask.pth"
DEMO_MODEL = DEMO_CHECKPOINT_DIR / CHECKPOINT_FILE
pytestmark = pytest.mark.skipif(not (DEMO_ADAPTER.is_file() and DEMO_MODEL.is_file()),
                                reason="the demo model or the demo adapter is not in this checkout")
GRID = 20
SEED = 11


def object_mask(image: np.ndarray, background: str) -> np.ndarray:
    """Pixels that differ clearly from the prompted background colour."""
    reference = np.array(ds.PALETTE[background], np.float32)
    return np.abs(image.astype(np.float32) - reference).max(axis=2) > 60


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture(scope="module")
def demo():
    from modules.sd.loader import load_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield load_model(DEMO_MODEL), load_adapter(DEMO_ADAPTER)
    finally:
        torch.set_num_threads(threads)


def test_the_demo_adapter_fits_the_demo_model(demo) -> None:
    model, adapter = demo
    assert adapter.kind == "full" and adapter.family == "sd1" and adapter.cond_channels == 1
    assert DEMO_ADAPTER.stat().st_size <= 20 * 1024 * 1024
    cond = torch.zeros(1, 1, 64, 64)
    features = compute_features(adapter, cond).features
    hooks = unet_hooks_for([(compute_features(adapter, cond), 1.0)], "sd1", unet_config=model.unet.config)
    assert len(features) == len(hooks.input_block_additions) == 3


def test_the_shape_lands_where_the_condition_mask_puts_it(demo) -> None:
    model, adapter = demo
    with_adapter, without = [], []
    for spec in ds.canonical_specs(GRID, seed=3):
        mask = shape_mask(spec, 64) >= 128
        prompt = f"a {spec.colour} {spec.shape} on a {spec.background} background"
        cond = torch.from_numpy(mask.astype(np.float32))[None, None]
        hooks = unet_hooks_for([(compute_features(adapter, cond), 1.0)], "sd1", unet_config=model.unet.config)
        steered = generate(model, [prompt], SEED, cfg_scale=7.0, unet_hooks=hooks)[0]
        plain = generate(model, [prompt], SEED, cfg_scale=7.0)[0]
        with_adapter.append(iou(object_mask(steered, spec.background), mask))
        without.append(iou(object_mask(plain, spec.background), mask))
    hits = np.mean(np.array(with_adapter) >= 0.6)
    chance = np.mean(np.array(without) >= 0.6)
    assert hits >= 0.8, (with_adapter, without)
    assert chance <= 0.35, without
