"""The lab's work as jobs on Atelier's shared job queue: dataset + training runs, and rollouts.

Training occupies the queue's single worker like any generation would, reports progress through the queue's
``State`` (so ``/internal/progress`` and ``/sdapi/v1/progress`` show it) and stops cleanly on interrupt
(``/sdapi/v1/interrupt`` or the tab's Stop button), saving a checkpoint that a later run with "resume" continues.
A :class:`RunRecord` per task keeps what the tab and ``/afno/v1/progress`` show: phase, losses, errors, result.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from afno_lab import dataset
from afno_lab.checkpoint import save_model
from afno_lab.forecaster import Forecaster, rollout_errors
from afno_lab.navier_stokes import SpectralSolver, fno_forcing, gaussian_random_field
from afno_lab.store import LabPaths, ModelStore
from afno_lab.training import TrainConfig, Trainer, split

EVAL_LEADS = 10


@dataclass
class RunRecord:
    """What is known about one training task, readable from any thread while it runs."""

    task_id: str
    name: str
    phase: str = "queued"  # queued, data, training, evaluating, done, stopped, failed
    step: int = 0
    steps: int = 0
    data_done: int = 0
    data_total: int = 0
    losses: list[tuple[int, float]] = field(default_factory=list)
    rollout_rel_l2: list[float] = field(default_factory=list)
    model_path: str | None = None
    error: str | None = None
    message: str = ""
    started: float | None = None
    finished: float | None = None

    def to_dict(self, loss_tail: int = 200) -> dict[str, Any]:
        data = asdict(self)
        data["losses"] = [list(x) for x in self.losses[-loss_tail:]]
        return data


class RunRegistry:
    """Task id → :class:`RunRecord`, for the runs started in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, RunRecord] = {}

    def add(self, record: RunRecord) -> RunRecord:
        with self._lock:
            self._runs[record.task_id] = record
        return record

    def get(self, task_id: str) -> RunRecord | None:
        with self._lock:
            return self._runs.get(task_id)

    def latest(self) -> RunRecord | None:
        with self._lock:
            return next(reversed(self._runs.values()), None)


def run_name_ok(name: str) -> bool:
    return bool(name) and len(name) <= 64 and all(c.isalnum() or c in "-_." for c in name) and name[0] not in "."


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but no CUDA device is available")
    return torch.device(device)


def training_job(record: RunRecord, spec: dataset.DatasetSpec, config: TrainConfig, paths: LabPaths, state: Any,
                 resume: bool = False, max_minutes: float | None = None, device: str = "auto") -> dict[str, Any]:
    """Data (cached) → training (checkpointed) → held-out rollout errors → ``runs/<name>/model.safetensors``."""
    record.started = time.time()

    def stop() -> bool:
        return bool(getattr(state, "interrupted", False))

    _set(state, job_count=2, job_no=0, sampling_step=0, sampling_steps=1)
    record.phase = "data"

    def data_progress(done: int, total: int, text: str) -> None:
        record.data_done, record.data_total, record.message = done, total, f"data: {text}"
        _set(state, sampling_step=done, sampling_steps=total, textinfo=record.message)

    try:
        data, data_path = dataset.cached(spec, paths.datasets, progress=data_progress, should_stop=stop)
        train, test = split(data, config.n_test)
        run_dir = paths.runs / record.name
        trainer = Trainer(config, train, run_dir, device=pick_device(device), dataset_name=data_path.name)
        if resume and (run_dir / "train_state.pt").is_file():
            trainer.load(run_dir / "train_state.pt")
        record.phase, record.steps, record.step = "training", config.steps, trainer.step
        record.losses = list(trainer.losses)
        _set(state, job_no=1, sampling_step=trainer.step, sampling_steps=config.steps)

        def train_progress(step: int, total: int, loss: float) -> None:
            record.step = step
            record.losses.append((step, loss))
            record.message = f"step {step}/{total}, loss {loss:.4f}"
            _set(state, sampling_step=step, sampling_steps=total, textinfo=record.message)

        deadline = time.time() + max_minutes * 60 if max_minutes else None
        result = trainer.run(progress=train_progress, should_stop=stop, deadline=deadline)
        record.phase = "evaluating"
        leads = min(EVAL_LEADS, test.shape[1] - config.history)
        errors = rollout_errors(trainer.forecaster, test, leads, [config.history - 1]) if leads > 0 else None
        record.rollout_rel_l2 = [round(float(e), 5) for e in errors] if errors is not None else []
        meta = {"step": result.step, "steps": config.steps, "seconds": round(result.seconds, 1),
                "dataset": data_path.name, "rollout_rel_l2": record.rollout_rel_l2, "train_config": config.to_dict()}
        model_path = save_model(run_dir / "model.safetensors", trainer.forecaster.net, trainer.forecaster.info, meta)
        record.model_path = str(model_path)
        record.phase = "stopped" if result.stopped else "done"
        record.message = (f"{'stopped' if result.stopped else 'finished'} at step {result.step}/{config.steps}; "
                          f"held-out one-step rel. L2 {record.rollout_rel_l2[0] if record.rollout_rel_l2 else '-'}")
        return record.to_dict()
    except InterruptedError:
        record.phase, record.message = "stopped", "stopped during dataset generation (nothing was cached)"
        return record.to_dict()
    except Exception as e:
        record.phase, record.error, record.message = "failed", f"{type(e).__name__}: {e}", f"failed: {e}"
        raise
    finally:
        record.finished = time.time()


def _set(state: Any, **values: Any) -> None:
    if state is None:
        return
    for key, value in values.items():
        setattr(state, key, value)


def submit_training(queue: Any, registry: RunRegistry, paths: LabPaths, spec: dataset.DatasetSpec,
                    config: TrainConfig, name: str, resume: bool = False, max_minutes: float | None = None,
                    device: str = "auto", task_id: str | None = None) -> RunRecord:
    """Validate, then queue a training job; returns its record at once (the job id is ``record.task_id``)."""
    if not run_name_ok(name):
        raise ValueError("the run name must be 1-64 letters, digits, '-', '_' or '.', not starting with '.'")
    spec.validate()
    config.validate(spec.n_records + 1)
    if not 0 < config.n_test < spec.n_samples:
        raise ValueError(f"n_test must be between 1 and n_samples − 1 ({spec.n_samples - 1})")
    pick_device(device)
    from modules.jobs import new_task_id

    task_id = task_id or new_task_id("afno")
    record = registry.add(RunRecord(task_id=task_id, name=name))
    queue.submit(lambda: training_job(record, spec, config, paths, queue.state, resume, max_minutes, device),
                 kind="afno-train", task_id=task_id, description=f"AFNO training {name}")
    return record


# rollouts ---------------------------------------------------------------------------------------------------------
@dataclass
class Rollout:
    model: str
    prediction: torch.Tensor  # (steps, n, n)
    truth: torch.Tensor | None = None  # (steps, n, n) from the solver, when asked for
    rel_l2: list[float] | None = None
    record_every: float = 1.0
    task_id: str = ""


def solver_truth(initial: torch.Tensor, steps: int, viscosity: float, record_every: float,
                 dt: float = 5e-3) -> torch.Tensor:
    """The numerical solution for ``steps`` records after ``initial`` (n, n), with the dataset's default set-up."""
    n = initial.shape[-1]
    while record_every / dt - round(record_every / dt) > 1e-9:
        dt /= 2
    solver = SpectralSolver(n, viscosity, dt, fno_forcing(n), dtype=torch.float64)
    return solver.run(initial[None].double(), steps * record_every, record_every)[0].float()


def sample_state(seed: int, n: int, t_start: float, viscosity: float = 1e-3) -> torch.Tensor:
    """A GRF initial vorticity (the dataset's law) evolved to ``t_start``: a realistic state to start from."""
    w0 = gaussian_random_field(1, n, generator=torch.Generator().manual_seed(seed))[0]
    if t_start <= 0:
        return w0.float()
    return solver_truth(w0, 1, viscosity, t_start)[0]


def rollout(forecaster: Forecaster, model: str, initial: torch.Tensor, steps: int,
            with_truth: bool = False) -> Rollout:
    """``initial``: (k, n, n) history (k = the model's history; one frame is repeated if k > 1 and only one given)."""
    k = forecaster.info.history
    if initial.ndim == 2:
        initial = initial[None]
    if initial.shape[0] == 1 and k > 1:
        initial = initial.expand(k, -1, -1)
    if initial.shape[0] < k:
        raise ValueError(f"the model takes a history of {k} frames (or one frame, repeated); got {initial.shape[0]}")
    pred = forecaster.rollout(initial[-k:][None].float(), steps)[0].cpu()
    out = Rollout(model, pred, record_every=forecaster.info.record_every)
    if with_truth:
        from afno_lab.forecaster import relative_l2

        truth = solver_truth(initial[-1], steps, forecaster.info.viscosity, forecaster.info.record_every)
        out.truth = truth
        out.rel_l2 = [round(float(e), 6) for e in relative_l2(pred, truth)]
    return out


def run_rollout(queue: Any, store: ModelStore, model: str | None, initial: torch.Tensor | None, steps: int,
                with_truth: bool = False, seed: int | None = None, t_start: float = 10.0,
                timeout: float | None = 600) -> Rollout:
    """A rollout on the shared queue's worker (never in the caller's thread), waited for.

    Without ``initial`` a state is drawn from ``seed`` (see :func:`sample_state`).
    """

    def job() -> Rollout:
        forecaster, _, path = store.load(model)
        name = model or path.name
        start = initial
        if start is None:
            n = forecaster.config.img_size[-1]
            start = sample_state(seed or 0, n, t_start, forecaster.info.viscosity)
        expected = tuple(forecaster.config.img_size)
        if tuple(start.shape[-2:]) != expected:
            raise ValueError(f"the initial field is {tuple(start.shape[-2:])}, model {name} takes {expected}")
        return rollout(forecaster, name, start, steps, with_truth)

    submitted = queue.submit(job, kind="afno-rollout", description="AFNO rollout")
    try:
        result = submitted.wait(timeout)
    except TimeoutError:
        queue.cancel(submitted.id)
        raise TimeoutError(f"the job queue stayed busy for {timeout:g} s (a training run?); try again later, or "
                           "stop the running job") from None
    result.task_id = submitted.id
    return result


def model_summary(store: ModelStore, name: str | None) -> dict[str, Any]:
    forecaster, meta, path = store.load(name)
    params = sum(p.numel() for p in forecaster.net.parameters())
    return {"name": name or path.name, "file": str(path), "size_mb": round(Path(path).stat().st_size / 1e6, 2),
            "parameters": params, "config": forecaster.config.to_dict(), "stepper": forecaster.info.to_dict(),
            "training": meta}
