"""Navier–Stokes trajectory datasets: generated once from a parameter set, cached on disk under a name derived from it.

A dataset is a float32 tensor (N, T+1, n, n): N trajectories of vorticity at t = 0, Δ, 2Δ, …, T·Δ (Δ = record_every,
one time unit in the FNO benchmark). The defaults trade the FNO generator's Δt=1e-4 at 256² for Δt=5e-3 at 64² in
float32: against Δt=5e-4 in float64 that changes the fields by 2e-4 relative L2 at t=10 (measured), far below the
errors of any learned model, and makes a trajectory-time-unit cost about 0.04 s on one core. The file is a
safetensors file whose metadata holds the parameters, so a cached file can always be matched to (and only to) the
request that made it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from afno_lab.navier_stokes import SpectralSolver, fno_forcing, gaussian_random_field

ProgressFn = Callable[[int, int, str], None]
FORMAT = "afno-lab-ns-v1"


@dataclass(frozen=True)
class DatasetSpec:
    """Everything that determines the generated data (and so its cache name)."""

    n_samples: int = 64
    t_end: float = 20.0
    record_every: float = 1.0
    resolution: int = 64
    viscosity: float = 1e-3
    dt: float = 5e-3
    precision: str = "float32"
    forcing_amplitude: float = 0.1
    alpha: float = 2.5
    tau: float = 7.0
    burn_in: float = 0.0
    seed: int = 0

    def validate(self) -> None:
        """Raise ValueError naming the first parameter out of range."""
        checks = [
            (1 <= self.n_samples <= 100_000, "n_samples must be between 1 and 100000"),
            (self.resolution >= 8 and self.resolution % 2 == 0, "resolution must be an even number ≥ 8"),
            (self.viscosity > 0, "viscosity must be positive"),
            (0 < self.dt <= self.record_every, "dt must be positive and at most record_every"),
            (self.t_end >= self.record_every, "t_end must be at least record_every"),
            (self.burn_in >= 0, "burn_in must be ≥ 0"),
            (self.precision in ("float32", "float64"), "precision must be float32 or float64"),
            (abs(self.record_every / self.dt - round(self.record_every / self.dt)) < 1e-6,
             "record_every must be a whole number of dt steps"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def n_records(self) -> int:
        return round(self.t_end / self.record_every)

    def key(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def file_name(self) -> str:
        return f"ns_v{self.viscosity:g}_n{self.resolution}_N{self.n_samples}_T{self.t_end:g}_{self.key()}.safetensors"


def generate(spec: DatasetSpec, progress: ProgressFn | None = None, should_stop: Callable[[], bool] | None = None,
             chunk: int = 32) -> torch.Tensor:
    """Solve ``spec.n_samples`` trajectories (in chunks of ``chunk``, so progress moves); (N, T+1, n, n) float32.

    Trajectory i depends only on (seed, i) — not on the chunk size — so a bigger dataset extends a smaller one.
    """
    spec.validate()
    dtype = torch.float64 if spec.precision == "float64" else torch.float32
    forcing = fno_forcing(spec.resolution, spec.forcing_amplitude)
    solver = SpectralSolver(spec.resolution, spec.viscosity, spec.dt, forcing, dtype=dtype)
    n_chunks = math.ceil(spec.n_samples / chunk)
    total = n_chunks * spec.n_records
    done = 0
    parts = []
    for c in range(n_chunks):
        ids = range(c * chunk, min((c + 1) * chunk, spec.n_samples))
        w0 = torch.cat([_initial_field(spec, i) for i in ids])
        if spec.burn_in > 0:
            w0 = solver.run(w0, spec.burn_in, spec.burn_in)[..., -1, :, :]

        def step(r: int, records: int, c: int = c, done: int = done) -> None:
            if progress is not None:
                progress(done + r, total, f"trajectories {c * chunk + 1}-{min((c + 1) * chunk, spec.n_samples)} "
                                          f"of {spec.n_samples}: t={r * spec.record_every:g}/{spec.t_end:g}")

        trajectory = solver.run(w0, spec.t_end, spec.record_every, progress=step, should_stop=should_stop)
        if trajectory.shape[-3] < spec.n_records:
            raise InterruptedError("dataset generation was stopped")
        parts.append(torch.cat([w0.unsqueeze(-3), trajectory], dim=-3).float())
        done += spec.n_records
    return torch.cat(parts)


def _initial_field(spec: DatasetSpec, index: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(spec.seed * 1_000_003 + index)
    return gaussian_random_field(1, spec.resolution, spec.alpha, spec.tau, generator=generator)


def save(path: Path, data: torch.Tensor, spec: DatasetSpec) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"vorticity": data.contiguous()}, str(tmp), metadata={"format": FORMAT, "spec": json.dumps(asdict(spec))})
    tmp.replace(path)
    return path


def read_spec(path: Path) -> DatasetSpec:
    """The parameters a dataset file was generated with; ValueError for a file that is not one of ours."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises several types for a bad header
        raise ValueError(f"{path.name} is not a dataset file ({e})") from e
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path.name} is not an AFNO lab dataset (format {meta.get('format')!r})")
    return DatasetSpec(**json.loads(meta["spec"]))


def load(path: Path) -> tuple[torch.Tensor, DatasetSpec]:
    spec = read_spec(path)
    return load_file(str(path))["vorticity"], spec


def cached(spec: DatasetSpec, cache_dir: Path, progress: ProgressFn | None = None,
           should_stop: Callable[[], bool] | None = None) -> tuple[torch.Tensor, Path]:
    """The dataset for ``spec``: read from ``cache_dir`` when a file with the same parameters is there, else made."""
    spec.validate()
    path = Path(cache_dir) / spec.file_name()
    if path.exists():
        try:
            data, found = load(path)
            if found == spec:
                if progress is not None:
                    progress(1, 1, f"loaded {path.name} from the cache")
                return data, path
        except ValueError:
            pass  # a damaged or foreign file: make it again
    data = generate(spec, progress, should_stop)
    return data, save(path, data, spec)


def list_cached(cache_dir: Path) -> list[Path]:
    return sorted(p for p in Path(cache_dir).glob("ns_*.safetensors") if p.is_file())
