"""The training command's planning: budgets, threads under load, and refusing to overwrite an earlier run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modules.training import demo_model
from modules.training.checkpoints import prepare_work_dir
from modules.training.train_unet import UNetSettings

pytest_plugins = ["tests.pipeline_fixtures"]


def test_budget_split_keeps_a_reserve() -> None:
    vae, unet = demo_model.budgets(90, 0.22)
    assert vae + unet == pytest.approx((90 - demo_model.RESERVE_MINUTES) * 60)
    assert vae == pytest.approx(0.22 * (vae + unet))


def test_threads_follow_the_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo_model.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(demo_model.os, "getloadavg", lambda: (0.1, 0.0, 0.0))
    assert demo_model.choose_threads(0) == 2
    monkeypatch.setattr(demo_model.os, "getloadavg", lambda: (1.2, 0.0, 0.0))
    assert demo_model.choose_threads(0) == 1
    monkeypatch.setattr(demo_model.os, "getloadavg", lambda: (6.0, 0.0, 0.0))
    assert demo_model.choose_threads(0) == 1
    assert demo_model.choose_threads(3) == 3


def test_an_earlier_run_is_neither_overwritten_nor_mixed_up(tmp_path: Path) -> None:
    work = tmp_path / "work"
    prepare_work_dir(work)
    (work / "vae.pt").write_bytes(b"earlier run")
    args = demo_model.parse_args(["--out", str(tmp_path / "out"), "--work-dir", str(work), "--tiny"])
    with pytest.raises(SystemExit, match="pass --resume to continue it or --fresh"):
        demo_model.run(args)
    assert (work / "vae.pt").read_bytes() == b"earlier run"
    assert (work / ".gitignore").read_text(encoding="utf8").splitlines()[-1] == "*"
    with pytest.raises(SystemExit):
        demo_model.parse_args(["--resume", "--fresh"])


def test_settings_overrides_are_typed_and_checked() -> None:
    settings = demo_model.with_overrides(UNetSettings(), ["batch_size=32", "high_noise_fraction=0.4"])
    assert settings.batch_size == 32 and settings.high_noise_fraction == 0.4
    with pytest.raises(SystemExit, match="NAME one of batch_size"):
        demo_model.with_overrides(UNetSettings(), ["batchsize=32"])
    with pytest.raises(SystemExit, match="Bad value"):
        demo_model.with_overrides(UNetSettings(), ["batch_size=many"])


def test_command_trains_exports_and_resumes(tmp_path: Path, one_thread: None) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    argv = ["--tiny", "--vae-steps", "1", "--unet-steps", "1", "--no-eval", "--no-bar", "--threads", "1",
            "--out", str(out), "--work-dir", str(work), "--vae-set", "batch_size=2", "--vae-set", "whiten_count=8",
            "--vae-set", "quality_count=4", "--unet-set", "batch_size=4", "--unet-set", "latents_per_caption=2",
            "--unet-set", "pool_size=8"]
    assert demo_model.main(argv) == 0
    checkpoint = out / demo_model.CHECKPOINT_FILE
    metrics = json.loads((out / demo_model.METRICS_FILE).read_text(encoding="utf8"))
    assert checkpoint.is_file() and metrics["unet"]["steps"] == 1 and metrics["vae"]["steps"] == 1
    assert metrics["unet_settings"]["pool_size"] == 8
    log = (out / demo_model.LOG_FILE).read_text(encoding="utf8")
    assert "vae: done after 1 steps" in log and "unet: done after 1 steps" in log
    first = load_file(checkpoint)
    assert demo_model.main([*argv, "--resume"]) == 0  # both phases are complete: loaded, exported again
    again = load_file(checkpoint)
    assert again.keys() == first.keys() and all(torch.equal(again[k], first[k]) for k in first)
    assert (out / demo_model.LOG_FILE).read_text(encoding="utf8").count("done after") == 2
