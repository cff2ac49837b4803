"""Seeded noise as A1111 makes it, so a seed reproduces the same image here and there.

* Every image has its own generator seeded with its own seed: image i of a batch equals that seed generated alone.
* Variation seeds blend the seed's noise with the subseed's by A1111's `slerp` (strength 0 = seed, 1 = subseed).
* "Resize seed from WxH" draws the noise at the old latent size and pastes it centred into fresh noise of the new size.
* After the first draw (the initial latent), a non-zero "Eta noise seed delta" (ENSD) re-seeds every generator with
  seed + ENSD for the later draws (ancestral noise); this is what NovelAI-style infotexts with "ENSD: 31337" need.
* Source "CPU" draws on the CPU and moves the result (same numbers on any hardware); "GPU" draws on the target device
  (A1111's default; results differ across vendors). MPS always draws on the CPU, as in A1111.

Per-row generators come from `modules.samplers.noise.ImageNoise`; this module adds A1111's first-draw rules on top.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from modules.samplers.noise import BrownianTreeNoiseSampler, ImageNoise, NoiseSampler, noise_sampler_from

log = logging.getLogger(__name__)

SEED_MAX = 4294967294  # A1111 picks random seeds with random.randrange(4294967294)


def get_fixed_seed(seed: Any) -> int:
    """A concrete seed: -1, None, "" or anything that is not an integer means "pick a random one"."""
    if seed is None or seed == "":
        return int(random.randrange(SEED_MAX))
    try:
        value = int(seed)
    except (TypeError, ValueError):
        return int(random.randrange(SEED_MAX))
    if isinstance(seed, float) and seed != value:
        return int(random.randrange(SEED_MAX))
    return int(random.randrange(SEED_MAX)) if value == -1 else value


def slerp(val: float, low: Tensor, high: Tensor) -> Tensor:
    """A1111's spherical interpolation for one image's noise ([C, H, W]).

    Norms are taken along dim 1 as A1111 does (so per channel and column), and when the two are almost parallel it
    falls back to A1111's linear blend, whose weights are swapped compared with the spherical branch. Both quirks are
    kept on purpose: variation seeds must give A1111's images.
    """
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(1) * high


def _shared(name: str) -> Any:
    from modules import shared

    return getattr(shared, name, None)


def _opt(name: str, default: Any) -> Any:
    opts = _shared("opts")
    return default if opts is None else getattr(opts, name, default)


def target_device(device: torch.device | str | None = None) -> torch.device:
    """Where noise ends up: the given device, else `shared.device`, else the CPU."""
    if device is None:
        device = _shared("device")
    return torch.device(device) if device is not None else torch.device("cpu")


def generator_device(source: str | None, device: torch.device) -> torch.device:
    """Where generators run for a `randn_source` ("GPU", "CPU", "NV") and target device."""
    source = source or "GPU"
    if source == "NV":
        log.warning("RNG source 'NV' (NVIDIA Philox emulation) is not available; drawing on the CPU instead")
        return torch.device("cpu")
    if source == "CPU" or device.type == "mps":
        return torch.device("cpu")
    return device


# --- A1111's module-level helpers (extensions call these through `devices.randn*` or `rng.*`) -----------------------

def create_generator(seed: int, *, device: torch.device | str | None = None,
                     source: str | None = None) -> torch.Generator:
    """A generator seeded with `seed` on the device the RNG source calls for."""
    gen_device = generator_device(source or _opt("randn_source", "GPU"), target_device(device))
    return torch.Generator(gen_device).manual_seed(int(seed))


def randn_local(seed: int, shape: Sequence[int], *, device: torch.device | str | None = None) -> Tensor:
    """The first N(0, 1) tensor of `seed`, without touching torch's global RNG."""
    out = target_device(device)
    generator = create_generator(seed, device=out)
    return torch.randn(tuple(shape), generator=generator, device=generator.device).to(out)


def randn(seed: int, shape: Sequence[int], generator: torch.Generator | None = None) -> Tensor:
    """A1111's `randn`: seeds torch's global RNG with `seed`, then draws (from `generator` if given)."""
    torch.manual_seed(int(seed))
    return randn_without_seed(shape, generator=generator)


def randn_without_seed(shape: Sequence[int], generator: torch.Generator | None = None) -> Tensor:
    """A draw that continues the global RNG (or `generator`), on the RNG source's device, moved to the target."""
    out = target_device()
    gen_device = generator.device if generator is not None else generator_device(_opt("randn_source", "GPU"), out)
    return torch.randn(tuple(shape), generator=generator, device=gen_device).to(out)


def randn_like(x: Tensor) -> Tensor:
    """Like `torch.randn_like`, but drawn on the CPU when the RNG source is "CPU" (or x is on MPS)."""
    if generator_device(_opt("randn_source", "GPU"), x.device).type == "cpu" and x.device.type != "cpu":
        return torch.randn_like(x, device="cpu").to(x.device)
    return torch.randn_like(x)


def manual_seed(seed: int) -> None:
    torch.manual_seed(int(seed))


# --- per-image RNG -------------------------------------------------------------------------------------------------

class ImageRNG:
    """Noise for a batch, one generator per image (A1111's class and arguments).

    `shape` is one image's latent shape (C, H, W); `seeds`/`subseeds` have one entry per image. `first()` makes the
    initial latent noise and `next()` every later draw (the first call to `next()` is `first()`).
    """

    def __init__(self, shape: Sequence[int], seeds: Sequence[int], subseeds: Sequence[int] | None = None,
                 subseed_strength: float = 0.0, seed_resize_from_h: int = 0, seed_resize_from_w: int = 0, *,
                 device: torch.device | str | None = None, randn_source: str | None = None,
                 eta_noise_seed_delta: int | None = None, dtype: torch.dtype = torch.float32) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.seeds = [int(s) for s in seeds]
        self.subseeds = None if subseeds is None else [int(s) for s in subseeds]
        self.subseed_strength = float(subseed_strength or 0.0)
        self.seed_resize_from_h = int(seed_resize_from_h or 0)
        self.seed_resize_from_w = int(seed_resize_from_w or 0)
        self.device = target_device(device)
        self.dtype = dtype
        self.randn_source = randn_source or _opt("randn_source", "GPU")
        self.eta_noise_seed_delta = int(
            eta_noise_seed_delta if eta_noise_seed_delta is not None else (_opt("eta_noise_seed_delta", 0) or 0))
        self.generator_device = generator_device(self.randn_source, self.device)
        self.noise = self._image_noise(self.seeds, self.shape)
        self.is_first = True

    def _image_noise(self, seeds: Sequence[int], shape: Sequence[int]) -> ImageNoise:
        # float32 on the target device: slerp and pasting happen before the cast to the model's dtype
        return ImageNoise(seeds, shape, device=self.device, dtype=torch.float32, generator_device=self.generator_device)

    @property
    def generators(self) -> list[torch.Generator]:
        return self.noise.generators

    def _noise_shape(self) -> tuple[int, ...]:
        """The shape the seeds' noise is drawn at: the old latent size when resizing the seed from WxH."""
        if self.seed_resize_from_h <= 0 or self.seed_resize_from_w <= 0:
            return self.shape
        return (self.shape[0], self.seed_resize_from_h // 8, self.seed_resize_from_w // 8)

    def first(self) -> Tensor:
        """The initial latent noise, [batch, C, H, W]; afterwards the generators switch to seed + ENSD if set."""
        noise_shape = self._noise_shape()
        fresh = self.noise.next()  # each generator's first draw at the target size
        noise = fresh if noise_shape == self.shape else self._image_noise(self.seeds, noise_shape).next()

        if self.subseeds is not None and self.subseed_strength != 0:
            subseeds = [self.subseeds[i] if i < len(self.subseeds) else 0 for i in range(len(self.seeds))]
            subnoise = self._image_noise(subseeds, noise_shape).next()
            noise = torch.stack([slerp(self.subseed_strength, n, s) for n, s in zip(noise, subnoise, strict=True)])

        if noise_shape != self.shape:
            noise = paste_centered(fresh, noise)

        if self.eta_noise_seed_delta:
            self.noise.reseed([seed + self.eta_noise_seed_delta for seed in self.seeds])
        self.is_first = False
        return noise.to(self.dtype)

    def next(self) -> Tensor:
        """The next draw for the batch (the first call gives `first()`)."""
        if self.is_first:
            return self.first()
        return self.noise.next().to(self.dtype)

    def randn_like(self, x: Tensor) -> Tensor:
        """`torch.randn_like` replacement for k-diffusion samplers: the next draw, shaped and placed like x."""
        expected = (len(self.seeds), *self.shape)
        if tuple(x.shape) != expected:
            raise ValueError(f"noise for shape {expected} requested with shape {tuple(x.shape)}")
        return self.next().to(x.device, x.dtype)

    def noise_sampler(self) -> NoiseSampler:
        """`noise_sampler(sigma, sigma_next) -> noise` for ancestral samplers, drawing from these generators."""
        return noise_sampler_from(self.next)

    def brownian_noise_sampler(self, x: Tensor, sigma_min: float | Tensor, sigma_max: float | Tensor,
                               ) -> BrownianTreeNoiseSampler:
        """For SDE samplers: Brownian-tree noise seeded per image with the image seeds, as A1111 seeds it."""
        return BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seeds=self.seeds)


def paste_centered(target: Tensor, source: Tensor) -> Tensor:
    """A1111's seed-resize paste: `source` ([B, C, h, w]) centred on `target` ([B, C, H, W]), cropped if larger."""
    result = target.clone()
    big_h, big_w = target.shape[-2:]
    small_h, small_w = source.shape[-2:]
    dx = (big_w - small_w) // 2
    dy = (big_h - small_h) // 2
    w = small_w if dx >= 0 else small_w + 2 * dx
    h = small_h if dy >= 0 else small_h + 2 * dy
    tx, ty = max(dx, 0), max(dy, 0)
    sx, sy = max(-dx, 0), max(-dy, 0)
    result[..., ty:ty + h, tx:tx + w] = source[..., sy:sy + h, sx:sx + w]
    return result
