"""2-D incompressible Navier–Stokes in vorticity form on the unit torus, the FNO benchmark's solver (Li et al. 2021).

    ∂w/∂t + u·∇w = ν Δw + f,   u = (∂ψ/∂y, −∂ψ/∂x),   −Δψ = w

Pseudo-spectral in space with 2/3 dealiasing of the nonlinear term; in time Crank–Nicolson on the viscous term and
explicit Euler on advection and forcing, as the FNO data generator does. Fields are (…, n, n) with x along the last
axis and y along the one before; the grid is ``i/n`` for i = 0..n−1.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

ProgressFn = Callable[[int, int], None]


def grid(n: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) coordinates of the n×n grid, each (n, n)."""
    t = torch.arange(n, dtype=dtype) / n
    y, x = torch.meshgrid(t, t, indexing="ij")
    return x, y


def fno_forcing(n: int, amplitude: float = 0.1, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The benchmark's steady forcing, amplitude·(sin 2π(x+y) + cos 2π(x+y))."""
    x, y = grid(n, dtype)
    phase = 2 * math.pi * (x + y)
    return amplitude * (torch.sin(phase) + torch.cos(phase))


def _wavenumbers(n: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer wavenumbers on the rfft2 grid: k_y (n, 1) over rows, k_x (1, n//2+1) over the halved last axis."""
    ky = torch.fft.fftfreq(n, d=1.0 / n).to(dtype).reshape(n, 1)
    kx = torch.fft.rfftfreq(n, d=1.0 / n).to(dtype).reshape(1, n // 2 + 1)
    return ky, kx


def gaussian_random_field(batch: int, n: int, alpha: float = 2.5, tau: float = 7.0,
                          generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Samples of N(0, σ²(−Δ + τ²I)^−α) with σ = τ^(α−1), zero mean, periodic; (batch, n, n).

    With α=2.5, τ=7 this is the FNO benchmark's initial vorticity, N(0, 7^{3/2}(−Δ+49I)^{−2.5}). The amplitude
    convention (n²·√2·σ·(4π²|k|²+τ²)^{−α/2} on a complex normal, real part of the inverse FFT) matches its generator.
    """
    k = torch.fft.fftfreq(n, d=1.0 / n).to(dtype)
    k2 = k.reshape(n, 1) ** 2 + k.reshape(1, n) ** 2
    sigma = tau ** (0.5 * (2 * alpha - 2.0))
    sqrt_eig = n * n * math.sqrt(2.0) * sigma * (4 * math.pi**2 * k2 + tau**2) ** (-alpha / 2.0)
    sqrt_eig[0, 0] = 0.0
    real = torch.randn(batch, n, n, generator=generator, dtype=dtype)
    imag = torch.randn(batch, n, n, generator=generator, dtype=dtype)
    coeff = torch.complex(real, imag) * sqrt_eig
    return torch.fft.ifft2(coeff).real


class SpectralSolver:
    """One fixed (n, ν, Δt, forcing) set-up; :meth:`step` advances spectral vorticity by one Δt."""

    def __init__(self, n: int, viscosity: float, dt: float, forcing: torch.Tensor | None = None,
                 dealias: bool = True, dtype: torch.dtype = torch.float64) -> None:
        self.n, self.viscosity, self.dt = n, viscosity, dt
        ky, kx = _wavenumbers(n, dtype)
        self.ikx = 2j * math.pi * kx  # ∂/∂x in Fourier space
        self.iky = 2j * math.pi * ky
        self.lap = 4 * math.pi**2 * (kx**2 + ky**2)  # −Δ
        self.inv_lap = torch.where(self.lap > 0, 1.0 / self.lap.clamp_min(1e-30), torch.zeros_like(self.lap))
        k_max = n // 2
        mask = (kx.abs() <= 2.0 / 3.0 * k_max) & (ky.abs() <= 2.0 / 3.0 * k_max)
        self.dealias = mask.to(dtype) if dealias else torch.ones_like(self.lap)
        self.dealias[0, 0] = 0.0  # u·∇w = ∇·(uw) has zero mean; dropping the round-off keeps mean vorticity at 0
        half = 0.5 * dt * viscosity * self.lap
        self.cn_num, self.cn_den = 1.0 - half, 1.0 + half
        self.f_hat = torch.fft.rfft2(forcing.to(dtype)) if forcing is not None else None
        self.dtype = dtype

    def velocity(self, w_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(u_x, u_y) in physical space from spectral vorticity."""
        psi_hat = w_hat * self.inv_lap
        ux = torch.fft.irfft2(self.iky * psi_hat, s=(self.n, self.n))
        uy = torch.fft.irfft2(-self.ikx * psi_hat, s=(self.n, self.n))
        return ux, uy

    def step(self, w_hat: torch.Tensor) -> torch.Tensor:
        ux, uy = self.velocity(w_hat)
        wx = torch.fft.irfft2(self.ikx * w_hat, s=(self.n, self.n))
        wy = torch.fft.irfft2(self.iky * w_hat, s=(self.n, self.n))
        advection = torch.fft.rfft2(ux * wx + uy * wy) * self.dealias
        explicit = -advection if self.f_hat is None else self.f_hat - advection
        return (self.cn_num * w_hat + self.dt * explicit) / self.cn_den

    def run(self, w0: torch.Tensor, t_end: float, record_every: float, progress: ProgressFn | None = None,
            should_stop: Callable[[], bool] | None = None) -> torch.Tensor:
        """Advance w0 (…, n, n) to ``t_end``; return the snapshots at record_every, 2·record_every, …, (…, T, n, n).

        ``progress(done, total)`` is called after every recorded snapshot; ``should_stop()`` ends the run early
        (the snapshots so far are returned).
        """
        steps_per_record = round(record_every / self.dt)
        if abs(steps_per_record * self.dt - record_every) > 1e-9 * max(record_every, 1.0) or steps_per_record < 1:
            raise ValueError(f"record_every {record_every} must be a whole number of time steps dt={self.dt}")
        records = round(t_end / record_every)
        w_hat = torch.fft.rfft2(w0.to(self.dtype))
        w_hat[..., 0, 0] = 0.0
        out = []
        for r in range(records):
            for _ in range(steps_per_record):
                w_hat = self.step(w_hat)
            snapshot = torch.fft.irfft2(w_hat, s=(self.n, self.n))
            if not torch.isfinite(snapshot).all():
                raise FloatingPointError(f"the solver blew up before t={(r + 1) * record_every:g}; use a smaller dt")
            out.append(snapshot)
            if progress is not None:
                progress(r + 1, records)
            if should_stop is not None and should_stop():
                break
        return torch.stack(out, dim=-3)


def taylor_green_vorticity(n: int, k: int = 1, amplitude: float = 1.0,
                           dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """w = A·sin(2πkx)·sin(2πky): a steady solution of the Euler part, so it only decays, as exp(−2ν(2πk)²t)."""
    x, y = grid(n, dtype)
    return amplitude * torch.sin(2 * math.pi * k * x) * torch.sin(2 * math.pi * k * y)
