"""Training an AFNONet stepper on trajectories: k frames in → next frame, relative-L2 loss, AdamW, warm-up + cosine.

Resume is exact: the batch order is a function of (seed, epoch), and a checkpoint holds the step, the model, the
optimizer, the schedule, the grad scaler and the RNG state, so stopping and resuming gives the same weights as an
uninterrupted run. Precision: fp32, bf16 (autocast) or fp16 (autocast + grad scaler, CUDA); ``auto`` picks fp32 on
CPUs without native bf16 (measured 8× slower than fp32 on AMD Zen3 here) and bf16/fp16 on CUDA.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from afno_lab.checkpoint import save_model
from afno_lab.forecaster import Forecaster, StepperInfo, relative_l2
from afno_lab.model import AFNOConfig, AFNONet

STATE_VERSION = 1
ProgressFn = Callable[[int, int, float], None]


@dataclass
class TrainConfig:
    """Hyper-parameters of one run; changing any of them (except ``steps`` limits) makes a different run."""

    model: AFNOConfig = field(default_factory=AFNOConfig)
    history: int = 1
    residual: bool = True
    unroll: int = 1
    steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    precision: str = "auto"
    seed: int = 0
    n_test: int = 8
    checkpoint_every: int = 200

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["model"] = self.model.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if isinstance(known.get("model"), dict):
            known["model"] = AFNOConfig.from_dict(known["model"])
        return cls(**known)

    def validate(self, frames: int) -> None:
        checks = [
            (self.history >= 1, "history must be ≥ 1"),
            (self.unroll >= 1, "unroll must be ≥ 1"),
            (self.steps >= 1, "steps must be ≥ 1"),
            (self.batch_size >= 1, "batch_size must be ≥ 1"),
            (self.lr > 0, "lr must be positive"),
            (self.precision in ("auto", "fp32", "bf16", "fp16"), "precision must be auto, fp32, bf16 or fp16"),
            (frames >= self.history + self.unroll, f"trajectories of {frames} frames are too short for history "
                                                   f"{self.history} + unroll {self.unroll}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def cpu_has_native_bf16() -> bool:
    """True on CPUs where oneDNN runs bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None: plain fp32)."""
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else None
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("fp16 training needs CUDA; use bf16 or fp32 on the CPU")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def data_scale(trajectories: torch.Tensor) -> float:
    return float(trajectories.float().std().clamp_min(1e-8))


class PairIndex:
    """All (trajectory, newest input frame) pairs and the batch order: a fresh permutation per epoch from the seed."""

    def __init__(self, n_traj: int, frames: int, history: int, unroll: int, batch_size: int, seed: int) -> None:
        times = torch.arange(history - 1, frames - unroll)
        self.pairs = torch.cartesian_prod(torch.arange(n_traj), times)
        self.batch_size = min(batch_size, len(self.pairs))
        self.per_epoch = len(self.pairs) // self.batch_size
        self.seed = seed
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def batch(self, step: int) -> torch.Tensor:
        """The (traj, t) pairs of optimizer step ``step`` (0-based); depends only on seed and step."""
        epoch, offset = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._perm = torch.randperm(len(self.pairs), generator=torch.Generator().manual_seed(self.seed + epoch))
            self._epoch = epoch
        return self.pairs[self._perm[offset * self.batch_size:(offset + 1) * self.batch_size]]


def lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(total - warmup, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


@dataclass
class TrainResult:
    forecaster: Forecaster
    step: int
    losses: list[tuple[int, float]]
    seconds: float
    stopped: bool
    checkpoint: Path | None


class Trainer:
    """One run over ``train`` trajectories (N, T+1, n, n) with checkpoints in ``run_dir``."""

    def __init__(self, config: TrainConfig, train: torch.Tensor, run_dir: Path | None = None,
                 device: str | torch.device = "cpu", dataset_name: str = "") -> None:
        config.validate(train.shape[1])
        if tuple(config.model.img_size) != tuple(train.shape[-2:]):
            config.model = AFNOConfig.from_dict({**config.model.to_dict(), "img_size": list(train.shape[-2:])})
        config.model = AFNOConfig.from_dict({**config.model.to_dict(), "in_chans": config.history, "out_chans": 1})
        self.config, self.run_dir, self.dataset_name = config, Path(run_dir) if run_dir else None, dataset_name
        self.device = torch.device(device)
        self.autocast_dtype = resolve_precision(config.precision, self.device)
        self.train = train.float()
        torch.manual_seed(config.seed)
        net = AFNONet(config.model).to(self.device)
        info = StepperInfo(history=config.history, residual=config.residual, scale=data_scale(self.train))
        self.forecaster = Forecaster(net, info)
        decay = [p for n, p in net.named_parameters() if n not in net.no_weight_decay()]
        rest = [p for n, p in net.named_parameters() if n in net.no_weight_decay()]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                            {"params": rest, "weight_decay": 0.0}], lr=config.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           lr_lambda(config.warmup_steps, config.steps))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.autocast_dtype == torch.float16)
        self.pairs = PairIndex(train.shape[0], train.shape[1], config.history, config.unroll, config.batch_size,
                               config.seed)
        self.step = 0
        self.losses: list[tuple[int, float]] = []
        self.seconds = 0.0

    # one step ---------------------------------------------------------------------------------------------------
    def _batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.pairs.batch(step)
        k, u = self.config.history, self.config.unroll
        offsets = torch.arange(-k + 1, u + 1)
        frames = self.train[idx[:, 0:1], idx[:, 1:2] + offsets]  # (B, k+u, n, n)
        return frames[:, :k].to(self.device), frames[:, k:].to(self.device)

    def train_step(self) -> float:
        self.forecaster.net.train()
        inputs, targets = self._batch(self.step)
        ctx = torch.autocast(self.device.type, dtype=self.autocast_dtype) if self.autocast_dtype else nullcontext()
        window, loss = inputs, torch.zeros((), device=self.device)
        with ctx:
            for j in range(self.config.unroll):
                pred = self.forecaster.step(window).float()
                loss = loss + relative_l2(pred, targets[:, j]).mean()
                window = torch.cat([window[:, 1:], pred.unsqueeze(1)], dim=1)
        loss = loss / self.config.unroll
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        value = float(loss.detach())
        self.losses.append((self.step, value))
        return value

    # loop -------------------------------------------------------------------------------------------------------
    def run(self, progress: ProgressFn | None = None, should_stop: Callable[[], bool] | None = None,
            deadline: float | None = None, until: int | None = None) -> TrainResult:
        """Train to ``config.steps`` (or ``until``); stop early on ``should_stop()`` or at the ``deadline`` (a
        ``time.time()`` value). A checkpoint is written every ``checkpoint_every`` steps and at the end."""
        target = min(until or self.config.steps, self.config.steps)
        stopped = False
        while self.step < target:
            if (should_stop is not None and should_stop()) or (deadline is not None and time.time() >= deadline):
                stopped = True
                break
            started = time.perf_counter()
            loss = self.train_step()
            self.seconds += time.perf_counter() - started
            if progress is not None:
                progress(self.step, self.config.steps, loss)
            if self.run_dir and self.config.checkpoint_every and self.step % self.config.checkpoint_every == 0:
                self.save()
        path = self.save() if self.run_dir else None
        return TrainResult(self.forecaster, self.step, list(self.losses), self.seconds, stopped, path)

    # checkpoints ------------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "step": self.step,
            "config": self.config.to_dict(),
            "stepper": self.forecaster.info.to_dict(),
            "model": self.forecaster.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": torch.get_rng_state(),
            "losses": torch.tensor(self.losses, dtype=torch.float64).reshape(-1, 2),
            "seconds": self.seconds,
            "dataset": self.dataset_name,
        }

    def save(self) -> Path:
        """``train_state.pt`` (everything needed to resume) and ``model.safetensors`` (for inference)."""
        assert self.run_dir is not None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / "train_state.pt"
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.state(), tmp)
        tmp.replace(path)
        save_model(self.run_dir / "model.safetensors", self.forecaster.net, self.forecaster.info,
                   {"step": self.step, "steps": self.config.steps, "seconds": round(self.seconds, 1),
                    "final_loss": self.losses[-1][1] if self.losses else None, "dataset": self.dataset_name,
                    "train_config": self.config.to_dict()})
        return path

    def load(self, path: Path) -> None:
        """Continue from a ``train_state.pt`` of the same configuration."""
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"{Path(path).name} is not a training state of this version")
        saved = TrainConfig.from_dict(state["config"])
        mine = self.config.to_dict()
        theirs = saved.to_dict()
        diffs = [k for k in mine if k != "checkpoint_every" and mine[k] != theirs.get(k)]
        if diffs:
            raise ValueError(f"cannot resume: the run was made with different {', '.join(diffs)}")
        self.forecaster.net.load_state_dict(state["model"])
        self.forecaster.info = StepperInfo.from_dict(state["stepper"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.losses = [(int(s), float(v)) for s, v in state["losses"].tolist()]
        self.seconds = float(state["seconds"])


def split(trajectories: torch.Tensor, n_test: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out): the last ``n_test`` trajectories are never trained on."""
    if not 0 < n_test < trajectories.shape[0]:
        raise ValueError(f"n_test must be between 1 and {trajectories.shape[0] - 1}, got {n_test}")
    return trajectories[:-n_test], trajectories[-n_test:]
