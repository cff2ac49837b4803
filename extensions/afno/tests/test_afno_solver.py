"""The Navier–Stokes solver and the dataset cache.

Taylor–Green: w = sin(2πkx)·sin(2πky) makes u·∇w vanish, so the only change is viscous decay exp(−2ν(2πk)²t);
the solver must reproduce it within 1e-4 relative. With forcing and a random initial field, mean vorticity must stay 0.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from afno_lab import dataset  # noqa: E402
from afno_lab.navier_stokes import (  # noqa: E402
    SpectralSolver,
    fno_forcing,
    gaussian_random_field,
    taylor_green_vorticity,
)


@pytest.mark.parametrize(("k", "viscosity"), [(1, 1e-3), (2, 1e-2), (3, 5e-3)])
def test_taylor_green_decays_at_the_viscous_rate(k: int, viscosity: float) -> None:
    n = 32
    w0 = taylor_green_vorticity(n, k=k, amplitude=2.0)
    solver = SpectralSolver(n, viscosity, dt=1e-3, forcing=None)
    out = solver.run(w0, t_end=2.0, record_every=0.5)
    for i, t in enumerate((0.5, 1.0, 1.5, 2.0)):
        expected = w0 * math.exp(-2 * viscosity * (2 * math.pi * k) ** 2 * t)
        rel = float((out[i] - expected).norm() / expected.norm())
        assert rel < 1e-4, (t, rel)
    assert float(out[-1].norm() / w0.norm()) < 0.999  # it did decay


def test_mean_vorticity_stays_zero_and_the_flow_evolves() -> None:
    n = 32
    w0 = gaussian_random_field(3, n, generator=torch.Generator().manual_seed(0))
    assert abs(float(w0.mean())) < 1e-12 and float(w0.std()) > 0.05
    solver = SpectralSolver(n, 1e-3, dt=5e-3, forcing=fno_forcing(n))
    out = solver.run(w0, t_end=3.0, record_every=1.0)
    assert out.shape == (3, 3, n, n)
    assert float(out.mean(dim=(-1, -2)).abs().max()) < 1e-12
    change = float((out[:, -1] - w0).norm() / w0.norm())
    assert change > 0.3  # forcing and advection really act


def test_forcing_is_the_benchmark_forcing() -> None:
    f = fno_forcing(4)
    # grid point (x=1/4, y=0): 0.1·(sin(π/2) + cos(π/2)) = 0.1; (x=1/4, y=1/4): 0.1·(sin π + cos π) = −0.1
    assert f[0, 1].item() == pytest.approx(0.1) and f[1, 1].item() == pytest.approx(-0.1)


def test_unstable_time_step_is_reported() -> None:
    n = 32
    w0 = 50 * gaussian_random_field(1, n, generator=torch.Generator().manual_seed(0))
    with pytest.raises(FloatingPointError, match="smaller dt"):
        SpectralSolver(n, 1e-4, dt=0.2, forcing=None).run(w0, t_end=20.0, record_every=0.2)


def test_dataset_is_cached_by_its_parameters(tmp_path: Path) -> None:
    spec = dataset.DatasetSpec(n_samples=3, t_end=2.0, resolution=16, dt=1e-2)
    calls: list[str] = []
    data, path = dataset.cached(spec, tmp_path, progress=lambda d, t, text: calls.append(text))
    assert data.shape == (3, 3, 16, 16) and data.dtype == torch.float32
    assert path.name.startswith("ns_v0.001_n16_N3_T2_") and dataset.read_spec(path) == spec
    assert not any("cache" in c for c in calls)
    stamp = path.stat().st_mtime_ns
    again, same = dataset.cached(spec, tmp_path, progress=lambda d, t, text: calls.append(text))
    assert same == path and path.stat().st_mtime_ns == stamp and "loaded" in calls[-1]
    assert torch.equal(again, data)
    other, other_path = dataset.cached(dataset.DatasetSpec(n_samples=3, t_end=2.0, resolution=16, dt=1e-2, seed=1),
                                       tmp_path)
    assert other_path != path and not torch.equal(other, data)
    # trajectory i depends only on (seed, i): a smaller chunk size gives the same fields
    assert torch.allclose(dataset.generate(spec, chunk=2), data, rtol=0, atol=1e-5)  # batching changes round-off only
    assert dataset.list_cached(tmp_path) == sorted([path, other_path])


def test_dataset_rejects_bad_parameters_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="whole number"):
        dataset.DatasetSpec(dt=0.3).validate()
    with pytest.raises(ValueError, match="viscosity"):
        dataset.DatasetSpec(viscosity=-1).validate()
    foreign = tmp_path / "ns_foreign.safetensors"
    foreign.write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a dataset file"):
        dataset.read_spec(foreign)
    stop = dataset.DatasetSpec(n_samples=2, t_end=3.0, resolution=16, dt=1e-2)
    with pytest.raises(InterruptedError):
        dataset.generate(stop, should_stop=lambda: True)
