"""``/afno/v1`` routes: rollout, training as a queued job, its progress, and the model list.

Thin adapters like ``/sdapi/v1``: pydantic validates, the work runs on the shared job queue, user errors come back as
4xx ``{error, detail, hint}`` JSON (Atelier's error body). Fields are nested JSON lists of floats, or base64 of
little-endian float32 bytes for large ones.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any, Literal

import numpy as np
import torch
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from afno_lab import lab_jobs, plots
from afno_lab.checkpoint import CheckpointError
from afno_lab.dataset import DatasetSpec
from afno_lab.model import AFNOConfig
from afno_lab.store import LabPaths, ModelStore
from afno_lab.training import TrainConfig
from modules.errors import AtelierError

PREFIX = "/afno/v1"
MAX_STEPS = 200
MAX_FIELD = 256


class RolloutRequest(BaseModel):
    model: str | None = Field(None, description="A name from GET /afno/v1/models; default: the first (shipped) one.")
    initial: list[Any] | None = Field(None, description="Initial vorticity, n×n (or k×n×n history) nested lists.")
    initial_b64: str | None = Field(None, description="Alternative: base64 of little-endian float32, row-major.")
    shape: list[int] | None = Field(None, description="The shape of initial_b64, e.g. [64, 64].")
    seed: int | None = Field(None, description="Without an initial field: draw one (GRF evolved to t_start).")
    t_start: float = Field(10.0, ge=0, le=100)
    steps: int = Field(10, ge=1, le=MAX_STEPS)
    with_truth: bool = Field(False, description="Also solve the PDE from the last initial frame and return errors.")
    encoding: str = Field("list", description="'list' (nested lists) or 'b64' (float32 bytes) for returned fields.")
    gif: bool = Field(False, description="Add an animated GIF (base64) of truth / prediction / error.")


class TrainRequest(BaseModel):
    name: str = Field("lab", description="Run folder under outputs/afno/runs; letters, digits, - _ .")
    n_samples: int = Field(64, ge=2, le=20_000)
    t_end: float = Field(20.0, gt=0, le=500)
    resolution: int = Field(64, ge=16, le=MAX_FIELD)
    viscosity: float = Field(1e-3, gt=0, le=1)
    data_seed: int = 0
    n_test: int = Field(8, ge=1)
    steps: int = Field(500, ge=1, le=1_000_000)
    batch_size: int = Field(16, ge=1, le=1024)
    lr: float = Field(1e-3, gt=0, le=1)
    weight_decay: float = Field(1e-4, ge=0, le=1)
    warmup_steps: int = Field(50, ge=0)
    history: int = Field(1, ge=1, le=16)
    unroll: int = Field(1, ge=1, le=8)
    residual: bool = True
    patch_size: int = Field(4, ge=1, le=32)
    embed_dim: int = Field(128, ge=8, le=2048)
    depth: int = Field(4, ge=1, le=48)
    num_blocks: int = Field(8, ge=1, le=64)
    mlp_ratio: float = Field(4.0, gt=0, le=16)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="fp16 on CUDA only.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    resume: bool = Field(False, description="Continue runs/<name>/train_state.pt if it exists.")
    max_minutes: float | None = Field(None, gt=0, description="Stop (with a checkpoint) after this long.")
    checkpoint_every: int = Field(200, ge=0)


class LabError(Exception):
    """A request the lab cannot serve; ``status`` is the HTTP code."""

    def __init__(self, message: str, hint: str = "", status: int = 422) -> None:
        super().__init__(message)
        self.message, self.hint, self.status = message, hint, status


def decode_field(req: RolloutRequest) -> torch.Tensor | None:
    """The request's initial field as float32 (n, n) or (k, n, n); a clear LabError for anything else."""
    if req.initial is not None and req.initial_b64 is not None:
        raise LabError("send either initial or initial_b64, not both")
    if req.initial_b64 is not None:
        if not req.shape:
            raise LabError("initial_b64 needs shape, e.g. [64, 64]")
        try:
            raw = base64.b64decode(req.initial_b64, validate=True)
        except (binascii.Error, ValueError) as e:
            raise LabError(f"initial_b64 is not valid base64 ({e})") from e
        count = math.prod(req.shape)
        if len(raw) != 4 * count:
            raise LabError(f"initial_b64 has {len(raw)} bytes; shape {req.shape} needs {4 * count}")
        array = np.frombuffer(raw, dtype="<f4").reshape(req.shape)
    elif req.initial is not None:
        try:
            array = np.asarray(req.initial, dtype=np.float32)
        except (ValueError, TypeError) as e:
            raise LabError("initial must be a rectangular nested list of numbers") from e
    else:
        return None
    if array.ndim not in (2, 3) or array.shape[-1] != array.shape[-2]:
        raise LabError(f"initial must be n×n or k×n×n, got shape {list(array.shape)}")
    if array.shape[-1] > MAX_FIELD:
        raise LabError(f"fields larger than {MAX_FIELD}×{MAX_FIELD} are not accepted")
    if not np.isfinite(array).all():
        raise LabError("initial contains NaN or infinity")
    return torch.from_numpy(array.copy())


def encode_field(t: torch.Tensor, encoding: str) -> Any:
    if encoding == "b64":
        return base64.b64encode(t.float().numpy().astype("<f4").tobytes()).decode("ascii")
    return [[[round(float(v), 6) for v in row] for row in frame] for frame in t.tolist()] if t.ndim == 3 else \
        [[round(float(v), 6) for v in row] for row in t.tolist()]


def train_request_to_specs(req: TrainRequest) -> tuple[DatasetSpec, TrainConfig]:
    spec = DatasetSpec(n_samples=req.n_samples, t_end=req.t_end, resolution=req.resolution, viscosity=req.viscosity,
                       seed=req.data_seed)
    if req.resolution % req.patch_size:
        raise ValueError(f"resolution {req.resolution} is not a multiple of patch_size {req.patch_size}")
    if req.embed_dim % req.num_blocks:
        raise ValueError(f"embed_dim {req.embed_dim} must be divisible by num_blocks {req.num_blocks}")
    model = AFNOConfig(img_size=(req.resolution, req.resolution), patch_size=(req.patch_size, req.patch_size),
                       in_chans=req.history, embed_dim=req.embed_dim, depth=req.depth, num_blocks=req.num_blocks,
                       mlp_ratio=req.mlp_ratio)
    config = TrainConfig(model=model, history=req.history, residual=req.residual, unroll=req.unroll, steps=req.steps,
                         batch_size=req.batch_size, lr=req.lr, weight_decay=req.weight_decay,
                         warmup_steps=req.warmup_steps, precision=req.precision, seed=req.seed, n_test=req.n_test,
                         checkpoint_every=req.checkpoint_every)
    return spec, config


def _error(status: int, error: str, detail: str, hint: str = "") -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, "hint": hint, "errors": detail}, status_code=status)


class _LabRoute(APIRoute):
    """Answers a request that fails validation or authentication with Atelier's error body, whatever exception
    handlers the app has (they are only installed with ``--api``)."""

    def get_route_handler(self) -> Any:
        handle = super().get_route_handler()

        async def checked(request: Request) -> Any:
            try:
                return await handle(request)
            except RequestValidationError as exc:
                problems = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}"
                                     for e in exc.errors())
                return _error(422, "RequestValidationError", f"Invalid request: {problems}",
                              "See /docs for the request schema.")
            except AtelierError as exc:
                response = _error(exc.status_code, type(exc).__name__, exc.message, exc.hint)
                response.headers.update(getattr(exc, "headers", None) or {})
                return response

        return checked


class LabApi:
    """The routes, bound to one queue, model store and run registry."""

    def __init__(self, queue: Any, paths: LabPaths, registry: lab_jobs.RunRegistry | None = None,
                 store: ModelStore | None = None, rollout_timeout: float = 600.0) -> None:
        self.queue, self.paths, self.rollout_timeout = queue, paths, rollout_timeout
        self.registry = registry or lab_jobs.RunRegistry()
        self.store = store or ModelStore(paths)

    def router(self, dependencies: list[Any] | None = None) -> APIRouter:
        router = APIRouter(prefix=PREFIX, dependencies=dependencies or [], route_class=_LabRoute)
        router.add_api_route("/models", self.models, methods=["GET"])
        router.add_api_route("/rollout", self.rollout, methods=["POST"])
        router.add_api_route("/train", self.train, methods=["POST"])
        router.add_api_route("/progress/{task_id}", self.progress, methods=["GET"])
        return router

    def models(self) -> dict[str, Any]:
        return {"models": [{"name": n, "file": str(p)} for n, p in self.store.available().items()],
                "default": self.store.default_name()}

    def rollout(self, req: RolloutRequest) -> Any:
        if req.encoding not in ("list", "b64"):
            return _error(422, "InvalidRequest", "encoding must be 'list' or 'b64'")
        try:
            initial = decode_field(req)
            if initial is None and req.seed is None:
                raise LabError("send an initial field (initial or initial_b64) or a seed to draw one")
            result = lab_jobs.run_rollout(self.queue, self.store, req.model, initial, req.steps, req.with_truth,
                                          req.seed, req.t_start, timeout=self.rollout_timeout)
        except LabError as e:
            return _error(e.status, "InvalidRequest", e.message, e.hint)
        except CheckpointError as e:
            status = 404 if "unknown model" in str(e) or "no AFNO models" in str(e) else 422
            return _error(status, "ModelError", str(e), "GET /afno/v1/models lists the models.")
        except ValueError as e:
            return _error(422, "InvalidRequest", str(e))
        except TimeoutError as e:
            return _error(503, "Busy", str(e), "POST /sdapi/v1/interrupt stops the running job.")
        body: dict[str, Any] = {"task_id": result.task_id, "model": result.model, "steps": req.steps,
                                "record_every": result.record_every,
                                "shape": list(result.prediction.shape), "encoding": req.encoding,
                                "prediction": encode_field(result.prediction, req.encoding)}
        if result.truth is not None:
            body["truth"] = encode_field(result.truth, req.encoding)
            body["rel_l2"] = result.rel_l2
        if req.gif:
            truth = result.truth if result.truth is not None else result.prediction
            frames = plots.comparison_frames(truth, result.prediction, result.record_every)
            body["gif"] = base64.b64encode(plots.gif_bytes(frames)).decode("ascii")
        return body

    def train(self, req: TrainRequest) -> Any:
        try:
            spec, config = train_request_to_specs(req)
            record = lab_jobs.submit_training(self.queue, self.registry, self.paths, spec, config, req.name,
                                              req.resume, req.max_minutes, req.device)
        except ValueError as e:
            return _error(422, "InvalidRequest", str(e))
        return {"task_id": record.task_id, "name": record.name, "progress": f"{PREFIX}/progress/{record.task_id}"}

    def progress(self, task_id: str) -> Any:
        record = self.registry.get(task_id)
        if record is None:
            return _error(404, "NotFound", f"no AFNO training task {task_id!r} in this server's session",
                          "POST /afno/v1/train returns the task id.")
        queue_info = self.queue.progress(task_id, live_preview=False)
        return {**record.to_dict(), "queue": {k: queue_info[k] for k in ("status", "progress", "eta",
                                                                         "queue_position", "textinfo")}}


def mount(app: FastAPI, api: LabApi, api_auth: str | None = None) -> None:
    """Add the routes to ``app``, behind HTTP Basic when the server has ``--api-auth``."""
    dependencies: list[Any] = []
    if api_auth:
        from modules.api.auth import basic_auth_dependency, parse_api_credentials

        credentials = parse_api_credentials(api_auth)
        if credentials:
            dependencies = [Depends(basic_auth_dependency(credentials))]
    app.include_router(api.router(dependencies))
