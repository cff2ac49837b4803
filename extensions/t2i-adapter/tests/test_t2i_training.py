"""Adapter training on the tiny random SD1 model: stop-and-resume equals one uninterrupted run, checkpoints are in
the released-file format, the dataset layout is checked, the demo dataset, and the command line."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

EXTENSION = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(EXTENSION))

import train_adapter  # noqa: E402
from t2i_adapter import load_adapter  # noqa: E402
from t2i_adapter.training import (  # noqa: E402
    AdapterDataset,
    DatasetError,
    TrainingError,
    TrainSettings,
    saved_steps,
    train,
    write_demo_dataset,
)

from modules.sd.schedule import DiscreteSchedule  # noqa: E402
from tests.sd.factory import write_tiny_checkpoint  # noqa: E402

pytest_plugins = ["tests.pipeline_fixtures"]


def write_dataset(folder: Path, count: int = 3, size: int = 32, condition: str = "mask") -> Path:
    """Pictures of a bright square at a different place each, its mask, and a caption."""
    rng = np.random.default_rng(0)
    (folder / "pics").mkdir(parents=True)
    lines = []
    for i in range(count):
        mask = np.zeros((size, size), np.uint8)
        y, x = rng.integers(0, size // 2, 2)
        mask[y : y + size // 2, x : x + size // 2] = 255
        picture = np.stack([mask, 255 - mask, np.full_like(mask, 60)], axis=-1)
        Image.fromarray(picture).save(folder / "pics" / f"{i}.png")
        Image.fromarray(mask).save(folder / "pics" / f"{i}.{condition}.png")
        (folder / "pics" / f"{i}.txt").write_text(f"a square number {i}\nsecond line ignored\n", encoding="utf8")
        lines.append(f"pics/{i}.png")
    meta = folder / "meta.txt"
    meta.write_text("# tiny dataset\n" + "\n".join(lines) + "\n\n", encoding="utf8")
    return meta


def settings(meta: Path, output: Path, steps: int, **kwargs) -> TrainSettings:
    values = {"meta": meta, "condition": "mask", "output": output, "steps": steps, "batch_size": 2, "lr": 1e-3,
              "seed": 5, "save_every": 10, "cond_channels": 1, "progress": False}
    return TrainSettings(**(values | kwargs))


def test_resume_gives_the_weights_of_one_uninterrupted_run(tiny_sd1, one_thread, tmp_path: Path) -> None:
    """20 steps, stop, resume for 20 more == 40 steps at once: bit-identical weights (and the same losses)."""
    meta = write_dataset(tmp_path / "data", size=16)
    stopped, straight = tmp_path / "stopped", tmp_path / "straight"
    logs: list[str] = []
    first = train(settings(meta, stopped, 20), model=tiny_sd1, log=logs.append)
    assert first.step == 20 and len(first.losses) == 20 and saved_steps(stopped) == [10, 20]
    second = train(settings(meta, stopped, 40), model=tiny_sd1, log=logs.append)
    assert second.step == 40 and len(second.losses) == 20
    assert any("Resumed from iteration 20" in line for line in logs)
    whole = train(settings(meta, straight, 40), model=tiny_sd1, log=logs.append)
    assert whole.losses[20:] == second.losses
    resumed = torch.load(stopped / "models" / "model_ad_40.pth", weights_only=True)
    uninterrupted = torch.load(straight / "models" / "model_ad_40.pth", weights_only=True)
    halfway = torch.load(stopped / "models" / "model_ad_20.pth", weights_only=True)
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)
    assert any(not torch.equal(resumed[k], halfway[k]) for k in resumed)  # the second half trained

    adapter = load_adapter(stopped / "models" / "model_ad_40.pth")  # the released-file format
    assert (adapter.kind, adapter.family, adapter.cond_channels, adapter.condition) == ("full", "sd1", 1, None)
    assert all(not k.startswith(("module.", "adapter.")) for k in resumed)
    assert adapter.config.channels == (32, 64) and adapter.config.unshuffle == 2

    with pytest.raises(TrainingError, match="another adapter layout"):
        train(settings(meta, stopped, 50, kind="light"), model=tiny_sd1, log=logs.append)


def test_v_prediction_models_train_on_their_own_target(tiny_sd1, one_thread, tmp_path: Path) -> None:
    model = copy.copy(tiny_sd1)
    model.schedule = DiscreteSchedule(tiny_sd1.schedule.alphas_cumprod, "v_prediction")
    logs: list[str] = []
    result = train(settings(write_dataset(tmp_path / "data"), tmp_path / "v", 2, kind="light", cond_channels=3),
                   model=model, log=logs.append)
    assert result.target == "v" and result.step == 2 and any("loss target: v" in line for line in logs)
    assert load_adapter(result.checkpoint).kind == "light"


def test_dataset_layout_errors(tmp_path: Path) -> None:
    meta = write_dataset(tmp_path / "data")
    dataset = AdapterDataset(meta, "mask")
    image, cond, caption = dataset.load(1)
    assert image.shape == cond.shape == (3, 32, 32) and caption == "a square number 1"
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert AdapterDataset(meta, "mask", size=16).load(0)[0].shape == (3, 16, 16)
    with pytest.raises(DatasetError, match=r"3 dataset files are missing: .*0\.depth\.png"):
        AdapterDataset(meta, "depth")
    (tmp_path / "data" / "pics" / "2.txt").unlink()
    with pytest.raises(DatasetError, match=r"1 dataset files are missing: .*2\.txt"):
        AdapterDataset(meta, "mask")
    with pytest.raises(DatasetError, match="does not exist"):
        AdapterDataset(tmp_path / "none.txt", "mask")
    Image.new("RGB", (16, 16)).save(tmp_path / "data" / "pics" / "1.mask.png")
    (tmp_path / "data" / "pics" / "2.txt").write_text("x")
    with pytest.raises(DatasetError, match="1.mask.png is 16x16 but its picture is 32x32"):
        AdapterDataset(meta, "mask").batch([0, 1])


def test_demo_dataset_masks_and_edges(tmp_path: Path) -> None:
    meta = write_demo_dataset(tmp_path / "demo", 3, seed=7)
    dataset = AdapterDataset(meta, "mask")
    assert len(dataset) == 3
    for index in range(3):
        image, mask, caption = dataset.load(index)
        assert "background" in caption
        inside = mask[0] > 0.5
        assert 0.02 < float(inside.float().mean()) < 0.4
        shape_colour, background = image[:, inside].mean(dim=1), image[:, ~inside].mean(dim=1)
        assert float((shape_colour - background).abs().max()) > 0.2  # the mask marks the drawn shape
        edge = AdapterDataset(meta, "edge").load(index)[1][0] > 0.5
        grown = torch.nn.functional.max_pool2d(inside[None].float(), 3, 1, 1)[0] > 0
        shrunk = -torch.nn.functional.max_pool2d(-inside[None].float(), 3, 1, 1)[0] > 0
        assert edge.sum() > 10 and torch.equal(edge, grown & ~shrunk)  # exactly the pixels at the shape's border


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread) -> None:
    assert train_adapter.main(["--make-demo-dataset", str(tmp_path / "demo"), "--demo-count", "2"]) == 0
    printed = capsys.readouterr().out
    assert "--cond mask --cond-channels 1" in printed and "atelier-demo.safetensors" in printed
    assert train_adapter.main(["--meta", str(tmp_path / "demo" / "meta.txt")]) == 2
    assert "--model and --meta are required" in capsys.readouterr().err
    checkpoint = write_tiny_checkpoint("sd1", tmp_path, name="tiny")
    meta = write_dataset(tmp_path / "data")
    args = ["--model", str(checkpoint), "--meta", str(meta), "--cond", "mask", "--cond-channels", "1", "--out",
            str(tmp_path / "run"), "--steps", "2", "--batch-size", "1", "--no-progress", "--save-every", "1"]
    assert train_adapter.main(args) == 0
    assert "Finished at iteration 2" in capsys.readouterr().out
    assert saved_steps(tmp_path / "run") == [1, 2] and (tmp_path / "run" / "train.log").is_file()
    assert train_adapter.main([*args[:5], "depth", *args[6:]]) == 2
    assert "dataset files are missing" in capsys.readouterr().err
