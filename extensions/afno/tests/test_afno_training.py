"""Training: the loss falls, resume is exact, checkpoints round-trip, rollout errors are measured on held-out data."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from afno_lab.checkpoint import load_forecaster  # noqa: E402
from afno_lab.dataset import DatasetSpec, generate  # noqa: E402
from afno_lab.forecaster import Forecaster, StepperInfo, relative_l2, rollout_errors  # noqa: E402
from afno_lab.model import AFNOConfig, AFNONet  # noqa: E402
from afno_lab.training import PairIndex, TrainConfig, Trainer, lr_lambda, resolve_precision, split  # noqa: E402

TINY_MODEL = AFNOConfig(patch_size=(4, 4), embed_dim=16, depth=1, num_blocks=4)


@pytest.fixture(scope="module")
def trajectories() -> torch.Tensor:
    torch.set_num_threads(1)
    return generate(DatasetSpec(n_samples=6, t_end=5.0, resolution=16, dt=1e-2))


def _config(**kw) -> TrainConfig:
    return TrainConfig(**{"model": TINY_MODEL, "steps": 6, "batch_size": 4, "warmup_steps": 2, "n_test": 2,
                          "checkpoint_every": 0, **kw})


def test_loss_falls_on_a_small_problem(trajectories: torch.Tensor) -> None:
    train, test = split(trajectories, 2)
    trainer = Trainer(_config(steps=60, lr=3e-3), train)
    before = rollout_errors(trainer.forecaster, test, 1)[0]
    result = trainer.run()
    after = rollout_errors(trainer.forecaster, test, 1)[0]
    first = sum(v for _, v in result.losses[:10]) / 10
    last = sum(v for _, v in result.losses[-10:]) / 10
    assert result.step == 60 and not result.stopped
    assert last < 0.8 * first and after < before


def test_resume_is_exact(trajectories: torch.Tensor, tmp_path: Path) -> None:
    train, _ = split(trajectories, 2)
    straight = Trainer(_config(), train, tmp_path / "a")
    straight.run()
    first = Trainer(_config(), train, tmp_path / "b")
    first.run(until=3)
    resumed = Trainer(_config(), train, tmp_path / "c")
    resumed.load(tmp_path / "b" / "train_state.pt")
    assert resumed.step == 3 and len(resumed.losses) == 3
    resumed.run()
    for (name, a), b in zip(straight.forecaster.net.state_dict().items(),
                            resumed.forecaster.net.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert straight.losses == resumed.losses
    with pytest.raises(ValueError, match="different lr"):
        Trainer(_config(lr=5e-3), train).load(tmp_path / "b" / "train_state.pt")


def test_interrupt_saves_a_checkpoint_and_model_file_round_trips(trajectories: torch.Tensor, tmp_path: Path) -> None:
    train, test = split(trajectories, 2)
    calls: list[int] = []
    trainer = Trainer(_config(history=2, unroll=2), train, tmp_path / "run")
    result = trainer.run(progress=lambda s, t, loss: calls.append(s), should_stop=lambda: len(calls) >= 2)
    assert result.stopped and result.step == 2 and calls == [1, 2]
    forecaster, meta = load_forecaster(tmp_path / "run" / "model.safetensors")
    assert meta["step"] == 2 and forecaster.info.history == 2 and forecaster.config.in_chans == 2
    window = test[:, :2]
    assert torch.allclose(forecaster.rollout(window, 3), trainer.forecaster.rollout(window, 3), atol=1e-6)


def test_batches_depend_only_on_seed_and_step() -> None:
    a, b = PairIndex(5, 8, 2, 1, 4, seed=3), PairIndex(5, 8, 2, 1, 4, seed=3)
    assert torch.equal(a.batch(7), b.batch(7)) and torch.equal(a.batch(2), b.batch(2))
    pairs = torch.cat([a.batch(s) for s in range(a.per_epoch)])
    assert len({tuple(p) for p in pairs.tolist()}) == len(pairs)  # no pair twice within an epoch
    assert int(pairs[:, 1].min()) >= 1 and int(pairs[:, 1].max()) <= 6  # history 2, one target frame


def test_schedule_and_precision_choices() -> None:
    f = lr_lambda(10, 110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0, abs=1e-12)
    assert resolve_precision("fp32", torch.device("cpu")) is None
    assert resolve_precision("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="CUDA"):
        resolve_precision("fp16", torch.device("cpu"))
    with pytest.raises(ValueError, match="too short"):
        _config(history=4, unroll=3).validate(frames=6)


def test_bf16_training_step_runs_on_cpu(trajectories: torch.Tensor) -> None:
    train, _ = split(trajectories, 2)
    trainer = Trainer(_config(precision="bf16", steps=2), train)
    result = trainer.run()
    assert all(torch.isfinite(torch.tensor(v)) for _, v in result.losses)
    assert next(trainer.forecaster.net.parameters()).dtype == torch.float32  # weights stay fp32


def test_rollout_feeds_predictions_back_and_errors_are_relative() -> None:
    torch.manual_seed(0)
    net = AFNONet(AFNOConfig(img_size=(8, 8), patch_size=(2, 2), embed_dim=8, depth=1, num_blocks=2))
    with torch.no_grad():
        net.head.weight.zero_()  # the network outputs 0: with residual the stepper is the identity
    stepper = Forecaster(net, StepperInfo(history=1, residual=True, scale=2.0))
    start = torch.randn(2, 1, 8, 8)
    out = stepper.rollout(start, 4)
    assert out.shape == (2, 4, 8, 8) and torch.allclose(out, start.expand(-1, 4, -1, -1), atol=1e-6)
    traj = torch.stack([start[:, 0] * (1 + 0.1 * i) for i in range(5)], dim=1)
    errors = rollout_errors(stepper, traj, 3)
    assert torch.allclose(errors, torch.tensor([0.1 / 1.1, 0.2 / 1.2, 0.3 / 1.3]), atol=1e-5)
    assert torch.allclose(relative_l2(torch.ones(1, 4), 2 * torch.ones(1, 4)), torch.tensor([0.5]))
    with pytest.raises(ValueError, match="in_chans == history"):
        Forecaster(net, StepperInfo(history=2))
