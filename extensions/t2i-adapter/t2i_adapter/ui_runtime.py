"""The script's sampling side: adapters loaded once (cached by path and mtime), each unit's features computed once
per picture size, and ``p.unet_hooks`` switched at every denoiser call so each unit acts only inside its guidance
window.

Per sampling run (the first pass, and again for a hires pass) :func:`start_sampling` builds a :class:`SamplingGate`
for the run's CFG denoiser; the ``on_cfg_denoiser`` callback (:func:`on_cfg_denoiser`) asks the gate for the hooks
of the units active at that call and puts them in ``p.unet_hooks``; :func:`finish_sampling` clears them after
sampling. The step fraction is the denoiser's call count over the calls the run makes (``CFGDenoiser.step`` /
``total_steps``), so it is exact for second-order samplers and img2img's shortened schedules too.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from modules.errors import AtelierError

from .api import AdapterFeatures, LoadedAdapter, compute_features, feature_channels, load_adapter, unet_hooks_for
from .ui_catalog import AdapterCatalog
from .ui_conditions import fit_map, map_tensor
from .units import AdapterUnit

log = logging.getLogger(__name__)

MAX_CACHED_ADAPTERS = 4
_cache: OrderedDict[tuple, LoadedAdapter] = OrderedDict()
_cache_lock = threading.Lock()
_gates: weakref.WeakKeyDictionary[Any, SamplingGate] = weakref.WeakKeyDictionary()


def cached_adapter(path: Path, device: torch.device | str, dtype: torch.dtype) -> LoadedAdapter:
    """The adapter at ``path`` on ``device``/``dtype``, loaded again only when the file changed (mtime)."""
    path = Path(path)
    key = (str(path.resolve()), path.stat().st_mtime_ns, str(device), dtype)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    adapter = load_adapter(path, device=device, dtype=dtype)
    with _cache_lock:
        for stale in [k for k in _cache if k[0] == key[0]]:
            del _cache[stale]
        _cache[key] = adapter
        while len(_cache) > MAX_CACHED_ADAPTERS:
            _cache.popitem(last=False)
    return adapter


def clear_adapter_cache() -> None:
    with _cache_lock:
        _cache.clear()


def model_family(sd_model: Any) -> str:
    return "sdxl" if getattr(sd_model, "is_sdxl", False) else "sd1"


def adapter_dtype(sd_model: Any) -> torch.dtype:
    """The UNet's dtype, except half precision on the CPU (slow or unsupported there): float32."""
    dtype = getattr(sd_model, "dtype", torch.float32)
    device = torch.device(getattr(sd_model, "device", "cpu"))
    if not dtype.is_floating_point or (device.type == "cpu" and dtype == torch.float16):
        return torch.float32
    return dtype


@dataclass
class AdapterRun:
    """One job's checked units and what it has computed for them (features per unit and picture size)."""

    units: list[AdapterUnit]
    catalog: AdapterCatalog
    features: dict[tuple[int, int, int], AdapterFeatures] = field(default_factory=dict)
    failed: set[int] = field(default_factory=set)

    @property
    def acting(self) -> list[AdapterUnit]:
        """Units that can change the picture (a weight of 0 is left out entirely, so the picture is unchanged)."""
        return [u for u in self.units if u.weight != 0 and u.index not in self.failed]


class SamplingGate:
    """The hooks for one sampling run: which units act at a step fraction, and their summed features."""

    def __init__(self, p: Any, entries: Sequence[tuple[AdapterUnit, AdapterFeatures]], family: str,
                 unet_config: Any = None, fuser: LoadedAdapter | None = None) -> None:
        self._p = weakref.ref(p)
        self.entries = list(entries)
        self.family, self.unet_config, self.fuser = family, unet_config, fuser
        self._hooks: dict[tuple[int, ...], Any] = {}

    def active_units(self, fraction: float) -> tuple[int, ...]:
        return tuple(i for i, (unit, _) in enumerate(self.entries) if unit.active_at(fraction))

    def hooks_at(self, fraction: float) -> Any:
        return self.hooks_for(self.active_units(fraction))

    def hooks_for(self, active: tuple[int, ...]) -> Any:
        """Hooks summing the features of the entries ``active`` (indexes), built once per set; None for none."""
        if not active:
            return None
        if active not in self._hooks:
            chosen = [self.entries[i] for i in active]
            self._hooks[active] = unet_hooks_for(
                [(features, unit.weight) for unit, features in chosen], self.family, self.fuser,
                [features.condition for _, features in chosen], unet_config=self.unet_config)
        return self._hooks[active]

    def apply(self, fraction: float) -> None:
        p = self._p()
        if p is not None:
            p.unet_hooks = self.hooks_at(fraction)

    def belongs_to(self, p: Any) -> bool:
        return self._p() is p


def step_fraction(params: Any) -> float:
    """The fraction of the run's denoiser calls made before this one (0 at the first call)."""
    denoiser = getattr(params, "denoiser", None)
    step, total = getattr(denoiser, "step", None), getattr(denoiser, "total_steps", None)
    if isinstance(step, int) and isinstance(total, int) and total > 0:
        return step / total
    return params.sampling_step / max(int(params.total_sampling_steps or 0), 1)


def on_cfg_denoiser(params: Any) -> None:
    """``on_cfg_denoiser`` callback: set the hooks of the run this denoiser belongs to, if it is one of ours."""
    gate = _gates.get(getattr(params, "denoiser", None))
    if gate is not None:
        gate.apply(step_fraction(params))


def _unit_features(p: Any, run: AdapterRun, unit: AdapterUnit, adapter: LoadedAdapter, width: int,
                   height: int) -> AdapterFeatures:
    key = (unit.index, width, height)
    if key not in run.features:
        condition = map_tensor(fit_map(unit.condition_map, width, height, unit.resize_mode))
        run.features[key] = compute_features(adapter, condition.to(p.sd_model.device))
    return run.features[key]


def check_fits(unit: AdapterUnit, features: AdapterFeatures, unet_config: Any, family: str) -> None:
    """An adapter made for another UNet (other channels or levels) is refused before it reaches the UNet."""
    if unet_config is None:
        return
    if features.features is not None:
        got = tuple(int(f.shape[1]) for f in features.features)
        expected = tuple(feature_channels(unet_config, family))
        if got != expected:
            raise AtelierError(f"{unit.label}: {unit.model} gives features of {got} channels, but this model's UNet "
                               f"takes {expected}; the adapter was made for another model.",
                               "Pick an adapter made for the loaded model.")
    if features.style_tokens is not None and int(features.style_tokens.shape[-1]) != unet_config.context_dim:
        raise AtelierError(f"{unit.label}: {unit.model} gives {int(features.style_tokens.shape[-1])}-wide style "
                           f"tokens, but this model's text context is {unet_config.context_dim} wide.",
                           "Pick a style adapter made for the loaded model.")


def _fuser_for(run: AdapterRun, units: Sequence[AdapterUnit], device: Any, dtype: torch.dtype) -> LoadedAdapter | None:
    """The CoAdapter fuser in the adapter folder, used when a unit's model is a CoAdapter (``coadapter-*``)."""
    if not any(Path(u.model).name.lower().startswith("coadapter-") for u in units):
        return None
    name = run.catalog.fuser()
    return cached_adapter(run.catalog.files[name], device, dtype) if name else None


def start_sampling(p: Any, run: AdapterRun, latent: torch.Tensor) -> SamplingGate | None:
    """Features for this pass's size and a gate for its sampler; sets the hooks of the first step.

    A unit that cannot run (a file that does not load, an adapter for another model family) is left out with a
    comment on the job and a warning in the log; the others still act.
    """
    model = p.sd_model
    scale = int(getattr(getattr(model.vae, "config", None), "downscale", 8))
    height, width = int(latent.shape[-2]) * scale, int(latent.shape[-1]) * scale
    device, dtype, family = model.device, adapter_dtype(model), model_family(model)
    unet_config = getattr(getattr(model, "config", None), "unet", None)
    entries = []
    for unit in run.acting:
        try:
            adapter = cached_adapter(run.catalog.files[unit.model], device, dtype)
            if adapter.family != family:
                raise AtelierError(f"{unit.label}: {unit.model} is an adapter for {adapter.family.upper()} models, "
                                   f"but the loaded model is {family.upper()}.", "Pick an adapter made for it.")
            features = _unit_features(p, run, unit, adapter, width, height)
            check_fits(unit, features, unet_config, family)
            entries.append((unit, features))
        except (AtelierError, OSError, ValueError, RuntimeError) as e:
            _leave_out(p, run, [unit], e)
    sampler = getattr(p, "sampler", None)
    denoiser = getattr(sampler, "model_wrap_cfg", None)
    p.unet_hooks = None
    if not entries or denoiser is None:
        return None
    try:
        fuser = _fuser_for(run, [u for u, _ in entries], device, dtype)
        gate = SamplingGate(p, entries, family, unet_config, fuser)
        gate.hooks_for(tuple(range(len(entries))))  # every unit at once: fails here, not inside the sampler
    except (AtelierError, OSError, ValueError, RuntimeError) as e:
        _leave_out(p, run, [u for u, _ in entries], e)
        return None
    _gates[denoiser] = gate
    gate.apply(0.0)
    return gate


def _leave_out(p: Any, run: AdapterRun, units: Sequence[AdapterUnit], error: Exception) -> None:
    message = getattr(error, "message", None) or str(error)
    for unit in units:
        run.failed.add(unit.index)
        text = message if message.startswith(unit.label) else f"{unit.label}: {message}"
        log.warning("%s (the unit is left out)", text)
        p.comment(f"{text} (the unit was left out)")


def finish_sampling(p: Any) -> None:
    """Clear ``p.unet_hooks`` and forget this job's gates (after sampling, and at the end of the job)."""
    p.unet_hooks = None
    for denoiser, gate in list(_gates.items()):
        if gate.belongs_to(p):
            _gates.pop(denoiser, None)
