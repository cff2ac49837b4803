"""The sampler table: A1111's sampler names, aliases and options, mapped to our sampler functions.

Order is A1111's UI order ("DPM++ 2M" first, the default). Lookups accept names, aliases (case-insensitive) and the
legacy "<sampler> <scheduler>" names of A1111 < 1.9 ("DPM++ 2M Karras"), which split into a sampler and a scheduler.

Options (A1111's keys): ``scheduler`` (the scheduler "Automatic" resolves to), ``second_order`` (two model calls
per step: prompt-editing steps are counted double), ``discard_next_to_last_sigma``, ``uses_ensd`` (ENSD is recorded
in the infotext), ``brownian_noise`` (the pipeline passes a per-image ``BrownianTreeNoiseSampler``), ``solver_type``
(passed as a keyword), and ours: ``denoiser: "lcm"`` (wrap the model in ``LCMDenoiser``).

Registering more samplers (how ``timesteps.py`` adds DDIM, DDIM CFG++, PLMS and UniPC)::

    from modules.samplers.registry import register_sampler
    register_sampler("DDIM", ddim, aliases=("ddim",), options={}, kind="timesteps")

at import time of the module, or list ``(name, function, aliases, options)`` tuples in a module-level
``TIMESTEP_SAMPLERS`` that the registry registers with ``kind="timesteps"``. The registry imports
``modules.samplers.timesteps`` itself on the first lookup, so callers never need to.

``kind="kdiffusion"`` samplers are called as ``function(model, x, sigmas, extra_args=..., callback=...,
disable=..., **sampler_knobs(...))`` with x already multiplied by ``sigmas[0]``;
``kind="timesteps"`` samplers keep the calling convention their module documents. Known names are kept in A1111's
order whatever the registration order; other names follow in registration order. Names must be unique
(``replace=True`` overrides).
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from modules.samplers import kdiffusion as kd
from modules.samplers import kdiffusion_sde as kds
from modules.samplers.denoiser import LCMSchedule, SigmaSchedule
from modules.samplers.noise import BrownianTreeNoiseSampler, NoiseSampler
from modules.samplers.schedulers import Scheduler, compute_sigmas, find_scheduler, schedulers
from modules.sd.schedule import DiscreteSchedule

CHURN_PARAMS = ("s_churn", "s_tmin", "s_tmax", "s_noise")
NOISE_PARAMS = ("s_noise",)

# A1111's UI order; timestep samplers come from timesteps.py.
UI_ORDER = (
    "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE", "Euler a", "Euler",
    "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart", "DDIM", "DDIM CFG++", "PLMS", "UniPC",
    "LCM",
)  # fmt: skip

PLUGIN_MODULES = ("modules.samplers.timesteps",)

# Suffixes of the aliases A1111 < 1.9 gave its "<sampler> Karras"/"Exponential" entries (k_dpmpp_2m_ka).
_LEGACY_ALIAS_SUFFIXES = {"_ka": "karras", "_exp": "exponential"}


@dataclass(frozen=True)
class SamplerData:
    """One sampler: A1111's ``SamplerData`` (name, aliases, options) with the function itself instead of a class.

    ``extra_params`` are the settings A1111 forwards to this sampler (s_churn, s_tmin, s_tmax, s_noise).
    """

    name: str
    function: Callable[..., Tensor]
    aliases: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    kind: str = "kdiffusion"
    extra_params: tuple[str, ...] = ()

    def accepts(self, parameter: str) -> bool:
        """Whether the function takes this keyword (A1111 passes ``eta`` only to samplers that do)."""
        return parameter in inspect.signature(self.function).parameters


def _builtin(name: str, function: Callable[..., Tensor], aliases: Sequence[str], extra: Sequence[str] = (), **options):
    return SamplerData(name, function, tuple(aliases), MappingProxyType(options), "kdiffusion", tuple(extra))


_samplers: dict[str, SamplerData] = {
    s.name: s
    for s in (
        _builtin("DPM++ 2M", kd.sample_dpmpp_2m, ["k_dpmpp_2m"], scheduler="karras"),
        _builtin("DPM++ SDE", kds.sample_dpmpp_sde, ["k_dpmpp_sde"], NOISE_PARAMS, scheduler="karras",
                 second_order=True, brownian_noise=True),
        _builtin("DPM++ 2M SDE", kds.sample_dpmpp_2m_sde, ["k_dpmpp_2m_sde"], NOISE_PARAMS, scheduler="exponential",
                 brownian_noise=True),
        _builtin("DPM++ 2M SDE Heun", kds.sample_dpmpp_2m_sde, ["k_dpmpp_2m_sde_heun"], NOISE_PARAMS,
                 scheduler="exponential", brownian_noise=True, solver_type="heun"),
        _builtin("DPM++ 2S a", kd.sample_dpmpp_2s_ancestral, ["k_dpmpp_2s_a"], NOISE_PARAMS, scheduler="karras",
                 uses_ensd=True, second_order=True),
        _builtin("DPM++ 3M SDE", kds.sample_dpmpp_3m_sde, ["k_dpmpp_3m_sde"], NOISE_PARAMS, scheduler="exponential",
                 discard_next_to_last_sigma=True, brownian_noise=True),
        _builtin("Euler a", kd.sample_euler_ancestral, ["k_euler_a", "k_euler_ancestral"], uses_ensd=True),
        _builtin("Euler", kd.sample_euler, ["k_euler"], CHURN_PARAMS),
        _builtin("LMS", kd.sample_lms, ["k_lms"]),
        _builtin("Heun", kd.sample_heun, ["k_heun"], CHURN_PARAMS, second_order=True),
        _builtin("DPM2", kd.sample_dpm_2, ["k_dpm_2"], CHURN_PARAMS, scheduler="karras",
                 discard_next_to_last_sigma=True, second_order=True),
        _builtin("DPM2 a", kd.sample_dpm_2_ancestral, ["k_dpm_2_a"], NOISE_PARAMS, scheduler="karras",
                 discard_next_to_last_sigma=True, uses_ensd=True, second_order=True),
        _builtin("DPM fast", kds.sample_dpm_fast, ["k_dpm_fast"], NOISE_PARAMS, uses_ensd=True),
        _builtin("DPM adaptive", kds.sample_dpm_adaptive, ["k_dpm_ad"], uses_ensd=True),
        _builtin("Restart", kd.sample_restart, ["restart"], scheduler="karras", second_order=True),
        _builtin("LCM", kd.sample_lcm, ["k_lcm"], denoiser="lcm"),
    )
}  # fmt: skip
_plugins_loaded = False


def _load_plugins() -> None:
    """Import the modules that register more samplers (once; a module that doesn't exist yet is skipped)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for module_name in PLUGIN_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue
        for name, function, aliases, options in getattr(module, "TIMESTEP_SAMPLERS", ()):
            if name not in _samplers:
                register_sampler(name, function, aliases, options, kind="timesteps")


def register_sampler(
    name: str,
    function: Callable[..., Tensor],
    aliases: Sequence[str] = (),
    options: Mapping[str, Any] | None = None,
    *,
    kind: str = "timesteps",
    extra_params: Sequence[str] = (),
    replace: bool = False,
) -> SamplerData:
    """Add a sampler to the table (see the module docstring); returns its entry."""
    if name in _samplers and not replace:
        raise ValueError(f"sampler {name!r} is already registered")
    data = SamplerData(name, function, tuple(aliases), MappingProxyType(dict(options or {})), kind, tuple(extra_params))
    _samplers[name] = data
    return data


def all_samplers() -> list[SamplerData]:
    """Every sampler, in A1111's UI order (known names first, then others in registration order)."""
    _load_plugins()
    position = {name: i for i, name in enumerate(UI_ORDER)}
    entries = list(_samplers.values())
    return sorted(entries, key=lambda s: (position.get(s.name, len(UI_ORDER)), entries.index(s)))


def sampler_names() -> list[str]:
    return [s.name for s in all_samplers()]


def default_sampler() -> SamplerData:
    return all_samplers()[0]


def _lookup(name: str) -> SamplerData | None:
    """Exact name, then name or alias case-insensitively."""
    _load_plugins()
    if name in _samplers:
        return _samplers[name]
    wanted = name.strip().lower()
    for sampler in all_samplers():
        if wanted == sampler.name.lower() or wanted in (alias.lower() for alias in sampler.aliases):
            return sampler
    return None


def _unknown(name: str) -> ValueError:
    return ValueError(f"unknown sampler {name!r}; valid samplers: {', '.join(sampler_names())}")


def split_sampler_scheduler(name: str) -> tuple[str, str | None]:
    """(sampler name, scheduler name or None) for a sampler name that may carry a legacy scheduler suffix.

    ``"DPM++ 2M Karras"`` -> ``("DPM++ 2M", "karras")``; ``"k_dpmpp_2m_ka"`` -> the same; ``"euler a"`` ->
    ``("Euler a", None)``. Raises ``ValueError`` listing the valid names when neither part is known.
    """
    direct = _lookup(name)
    if direct is not None:
        return direct.name, None
    lowered = name.strip().lower()
    for scheduler in schedulers:
        for option in (scheduler.label, scheduler.name, *scheduler.aliases):
            suffix = " " + option.lower()
            if lowered.endswith(suffix):
                sampler = _lookup(name.strip()[: -len(suffix)])
                if sampler is not None:
                    return sampler.name, scheduler.name
    for suffix, scheduler_name in _LEGACY_ALIAS_SUFFIXES.items():
        if lowered.endswith(suffix):
            sampler = _lookup(lowered[: -len(suffix)])
            if sampler is not None:
                return sampler.name, scheduler_name
    raise _unknown(name)


def find_sampler(name: str | None) -> SamplerData:
    """The sampler for a name, alias or legacy "<sampler> <scheduler>" name; None or "" is the default sampler."""
    if not name:
        return default_sampler()
    return _samplers[split_sampler_scheduler(name)[0]]


def resolve(sampler_name: str | None, scheduler_name: str | None = None) -> tuple[SamplerData, Scheduler]:
    """Sampler and scheduler to use; a legacy suffix in the sampler name wins over ``scheduler_name``."""
    if not sampler_name:
        return default_sampler(), find_scheduler(scheduler_name)
    name, legacy_scheduler = split_sampler_scheduler(sampler_name)
    return _samplers[name], find_scheduler(legacy_scheduler or scheduler_name)


def is_second_order(name: str | None) -> bool:
    """Whether the sampler calls the model twice a step (A1111 then counts prompt-schedule steps double)."""
    return bool(find_sampler(name).options.get("second_order", False))


def sigmas_for(
    sampler_name: str | None,
    scheduler_name: str | None,
    steps: int,
    schedule: SigmaSchedule,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    rho: float | None = None,
    is_sdxl: bool = False,
    *,
    always_discard_next_to_last_sigma: bool = False,
    beta_alpha: float = 0.6,
    beta_beta: float = 0.6,
    device: torch.device | str = "cpu",
) -> Tensor:
    """The sigmas A1111 would sample ``steps`` steps with (``KDiffusionSampler.get_sigmas``).

    "Automatic" means the sampler's preferred scheduler, else the model's own discrete sigmas. Samplers that
    discard the next-to-last sigma get one more step and then drop it, so the count stays ``steps``. sigma_min/max/rho
    override the model's values (None or 0: keep them). LCM uses its 50-timestep table. DPM fast and DPM adaptive
    only use the range of what this returns (and DPM fast its length as its model-call budget).
    """
    sampler, scheduler = resolve(sampler_name, scheduler_name)
    discard = bool(sampler.options.get("discard_next_to_last_sigma", False)) or always_discard_next_to_last_sigma
    if sampler.options.get("denoiser") == "lcm" and isinstance(schedule, DiscreteSchedule):
        schedule = LCMSchedule(schedule)
    if scheduler.function is None:
        scheduler = find_scheduler(sampler.options.get("scheduler"))
    sigmas = compute_sigmas(
        scheduler,
        steps + (1 if discard else 0),
        schedule,
        sigma_min=sigma_min,
        sigma_max=sigma_max,
        rho=rho,
        is_sdxl=is_sdxl,
        beta_alpha=beta_alpha,
        beta_beta=beta_beta,
        device=device,
    )
    if discard:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas


def sampler_knobs(
    sampler: SamplerData,
    *,
    eta: float | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
) -> dict[str, Any]:
    """Keyword arguments A1111 passes a k-diffusion sampler: its extra params, ``eta`` if it takes one, solver_type,
    and ``noise_sampler`` if it takes one.

    ``eta`` None leaves the function's default; A1111 passes its "eta_ancestral" setting (1.0).
    """
    values = {"s_churn": s_churn, "s_tmin": s_tmin, "s_tmax": s_tmax, "s_noise": s_noise}
    knobs: dict[str, Any] = {param: values[param] for param in sampler.extra_params if sampler.accepts(param)}
    if eta is not None and sampler.accepts("eta"):
        knobs["eta"] = eta
    if noise_sampler is not None and sampler.accepts("noise_sampler"):
        knobs["noise_sampler"] = noise_sampler
    if "solver_type" in sampler.options:
        knobs["solver_type"] = sampler.options["solver_type"]
    return knobs


def make_noise_sampler(
    sampler: SamplerData, x: Tensor, sigmas: Tensor, seeds: Sequence[int], image_noise: NoiseSampler
) -> NoiseSampler:
    """The noise source A1111 gives this sampler: per-image Brownian trees over ``sigmas``' range for the
    ``brownian_noise`` samplers (pass the full schedule's sigmas, also for img2img), else ``image_noise``."""
    if sampler.options.get("brownian_noise", False):
        return BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seeds=list(seeds))
    return image_noise
