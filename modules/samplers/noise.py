"""Noise for stochastic samplers, seeded per image so that an image does not depend on its batch.

A sampler asks for noise through a *noise sampler*: ``noise_sampler(sigma, sigma_next) -> Tensor`` shaped like the
batch of latents. Two kinds:

* ``ImageNoise``: independent N(0, 1) draws, one ``torch.Generator`` per batch row (A1111's ``ImageRNG``). The same
  object can produce the initial latent noise (``next()``) and then serve the ancestral steps; ``reseed`` switches the
  generators to new seeds after the first draw, which is how A1111's "Eta noise seed delta" (ENSD) works: the caller
  reseeds with ``seed + ensd``.
* ``BrownianTreeNoiseSampler``: the increment of a Brownian motion over [sigma_next, sigma], normalised to unit
  variance, from one ``torchsde.BrownianTree`` per image (k-diffusion's sampler of the same name). SDE samplers need
  this: noise drawn for overlapping intervals stays consistent, so results converge as steps increase.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

NoiseSampler = Callable[[Tensor, Tensor], Tensor]


def default_noise_sampler(x: Tensor) -> NoiseSampler:
    """Unseeded noise from torch's global RNG, for ad-hoc use; generation always passes a seeded sampler."""
    return lambda sigma, sigma_next: torch.randn_like(x)


def noise_sampler_from(next_noise: Callable[[], Tensor]) -> NoiseSampler:
    """Adapt any ``() -> Tensor`` noise source (e.g. the pipeline's image RNG) to the noise-sampler interface."""
    return lambda sigma, sigma_next: next_noise()


class ImageNoise:
    """Gaussian noise for a batch, row i drawn from a generator seeded with ``seeds[i]``.

    ``shape`` is one image's shape (e.g. ``(4, 64, 64)``). Draws happen on ``generator_device`` (CPU by default, so
    results are the same on every machine) in float32 and are then moved to ``device``/``dtype``.
    """

    def __init__(
        self,
        seeds: Sequence[int],
        shape: Sequence[int],
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        generator_device: torch.device | str = "cpu",
    ) -> None:
        self.shape = tuple(shape)
        self.device = torch.device(device)
        self.dtype = dtype
        self.generator_device = torch.device(generator_device)
        self.generators: list[torch.Generator] = []
        self.reseed(seeds)

    def reseed(self, seeds: Sequence[int]) -> None:
        """Restart every row's generator from a new seed (ENSD after the first draw); batch size must not change."""
        if self.generators and len(seeds) != len(self.generators):
            raise ValueError(f"expected {len(self.generators)} seeds, got {len(seeds)}")
        self.generators = [torch.Generator(self.generator_device).manual_seed(int(seed)) for seed in seeds]

    def next(self) -> Tensor:
        """One draw for the whole batch: [batch, *shape]."""
        rows = [torch.randn(self.shape, generator=g, device=self.generator_device) for g in self.generators]
        return torch.stack(rows).to(self.device, self.dtype)

    def __call__(self, sigma: Tensor | None = None, sigma_next: Tensor | None = None) -> Tensor:
        return self.next()

    def randn_like(self, x: Tensor) -> Tensor:
        """A draw shaped like x, which must be this batch's shape."""
        expected = (len(self.generators), *self.shape)
        if tuple(x.shape) != expected:
            raise ValueError(f"noise for shape {expected} requested with shape {tuple(x.shape)}")
        return self.next().to(x.device, x.dtype)


class _BatchedBrownianTree:
    """One ``torchsde.BrownianTree`` per seed (each over one row's shape), or a single tree for an int seed."""

    def __init__(self, x: Tensor, t0: Tensor, t1: Tensor, seeds: int | Sequence[int] | None) -> None:
        import torchsde  # imported here: only SDE samplers need it

        t0, t1, self.sign = self._sort(t0, t1)
        if seeds is None:
            seeds = int(torch.randint(0, 2**63 - 1, []).item())
        if isinstance(seeds, int):
            self.batched = False
            self.trees = [torchsde.BrownianTree(t0, torch.zeros_like(x), t1, entropy=seeds)]
        else:
            if len(seeds) != x.shape[0]:
                raise ValueError(f"{len(seeds)} seeds for a batch of {x.shape[0]}")
            self.batched = True
            w0 = torch.zeros_like(x[0])
            self.trees = [torchsde.BrownianTree(t0, w0, t1, entropy=int(seed)) for seed in seeds]

    @staticmethod
    def _sort(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, int]:
        return (a, b, 1) if a < b else (b, a, -1)

    def __call__(self, t0: Tensor, t1: Tensor) -> Tensor:
        t0, t1, sign = self._sort(t0, t1)
        w = torch.stack([tree(t0, t1) for tree in self.trees]) * (self.sign * sign)
        return w if self.batched else w[0]


class BrownianTreeNoiseSampler:
    """Unit-variance Brownian increments between two sigmas, seeded per image (a list) or for the batch (an int).

    ``sigma_min``/``sigma_max`` bound the interval the tree covers (the smallest non-zero and the largest sigma of
    the schedule); ``transform`` maps sigma to the tree's time axis (identity, as A1111 uses it).
    """

    def __init__(
        self,
        x: Tensor,
        sigma_min: float | Tensor,
        sigma_max: float | Tensor,
        seeds: int | Sequence[int] | None = None,
        transform: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        self.transform = transform if transform is not None else (lambda sigma: sigma)
        t0 = self.transform(torch.as_tensor(sigma_min))
        t1 = self.transform(torch.as_tensor(sigma_max))
        self.tree = _BatchedBrownianTree(x, t0, t1, seeds)

    def __call__(self, sigma: Tensor | float, sigma_next: Tensor | float) -> Tensor:
        t0 = self.transform(torch.as_tensor(sigma))
        t1 = self.transform(torch.as_tensor(sigma_next))
        return self.tree(t0, t1) / (t1 - t0).abs().sqrt()
