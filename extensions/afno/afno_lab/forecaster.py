"""A trained AFNONet as a time stepper: scaling, k-frame history in, next frame out, and autoregressive rollout.

The network sees frames divided by ``scale`` (the training data's standard deviation). With ``residual`` it predicts
the change from the newest input frame, which makes one step an identity plus a small correction.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any

import torch

from afno_lab.model import AFNOConfig, AFNONet


@dataclass
class StepperInfo:
    """What turns the network into a stepper, stored beside the weights."""

    history: int = 1
    residual: bool = True
    scale: float = 1.0
    record_every: float = 1.0
    viscosity: float = 1e-3

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepperInfo:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def relative_l2(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """‖pred − target‖₂ / ‖target‖₂ per sample (FourCastNet's and FNO's LpLoss with p=2), shape (B,)."""
    diff = (pred - target).flatten(1).float().norm(dim=1)
    return diff / target.flatten(1).float().norm(dim=1).clamp_min(eps)


class Forecaster:
    """``net`` + :class:`StepperInfo`; frames are (B, n, n) tensors in physical units."""

    def __init__(self, net: AFNONet, info: StepperInfo) -> None:
        if net.config.in_chans != info.history or net.config.out_chans != 1:
            raise ValueError(f"a stepper needs in_chans == history ({info.history}) and out_chans == 1, "
                             f"the network has {net.config.in_chans} and {net.config.out_chans}")
        self.net, self.info = net, info

    @property
    def config(self) -> AFNOConfig:
        return self.net.config

    def step(self, frames: torch.Tensor) -> torch.Tensor:
        """The next frame from the last ``history`` frames (B, k, n, n) → (B, n, n); differentiable."""
        x = frames / self.info.scale
        y = self.net(x)[:, 0]
        if self.info.residual:
            y = y + x[:, -1]
        return y * self.info.scale

    @torch.no_grad()
    def rollout(self, frames: torch.Tensor, steps: int, autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
        """``steps`` predicted frames after the given history (B, k, n, n) → (B, steps, n, n), fed back each time."""
        was_training = self.net.training
        self.net.eval()
        device = next(self.net.parameters()).device
        window = frames.to(device=device, dtype=torch.float32)
        outputs = []
        ctx = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
        try:
            for _ in range(steps):
                with ctx:
                    nxt = self.step(window).float()
                outputs.append(nxt)
                window = torch.cat([window[:, 1:], nxt.unsqueeze(1)], dim=1)
        finally:
            self.net.train(was_training)
        return torch.stack(outputs, dim=1)


def rollout_errors(forecaster: Forecaster, trajectories: torch.Tensor, steps: int, starts: list[int] | None = None,
                   batch: int = 32) -> torch.Tensor:
    """Mean relative L2 at lead 1..steps over held-out trajectories (N, T+1, n, n), starting at each of ``starts``.

    ``starts`` are indexes of the newest history frame (default: the first one possible, k−1).
    """
    k = forecaster.info.history
    starts = starts if starts is not None else [k - 1]
    total, count = torch.zeros(steps), 0
    for s in starts:
        if s - k + 1 < 0 or s + steps >= trajectories.shape[1]:
            raise ValueError(f"start {s} with history {k} and {steps} steps does not fit {trajectories.shape[1]} "
                             "frames")
        for i in range(0, trajectories.shape[0], batch):
            chunk = trajectories[i:i + batch]
            pred = forecaster.rollout(chunk[:, s - k + 1:s + 1], steps)
            truth = chunk[:, s + 1:s + 1 + steps].to(pred.device)
            errors = torch.stack([relative_l2(pred[:, j], truth[:, j]) for j in range(steps)], dim=1)
            total += errors.sum(0).cpu()
            count += chunk.shape[0]
    return total / max(count, 1)
