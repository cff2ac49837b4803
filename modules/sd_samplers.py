"""A1111's ``modules.sd_samplers`` surface for extensions and scripts, backed by ``modules.samplers.registry``.

``all_samplers``, ``all_samplers_map``, ``samplers``, ``samplers_for_img2img`` and ``samplers_map`` are computed on
each access (module ``__getattr__``), so samplers registered later are visible; ``set_samplers`` is kept as a no-op
for code that calls it after adding one. Entries are ``registry.SamplerData`` (``name``, ``aliases``, ``options``
as in A1111; the sampler function instead of A1111's constructor).
"""

from __future__ import annotations

from typing import Any

from modules.samplers import registry
from modules.samplers.registry import SamplerData
from modules.samplers.schedulers import schedulers, schedulers_map


def __getattr__(name: str) -> Any:
    if name in ("all_samplers", "samplers", "samplers_for_img2img"):
        return registry.all_samplers()
    if name == "all_samplers_map":
        return {s.name: s for s in registry.all_samplers()}
    if name == "samplers_map":
        # A1111: lower-cased name and every lower-cased alias -> sampler name.
        mapping: dict[str, str] = {}
        for sampler in registry.all_samplers():
            mapping[sampler.name.lower()] = sampler.name
            for alias in sampler.aliases:
                mapping[alias.lower()] = sampler.name
        return mapping
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def set_samplers() -> None:
    """A1111 rebuilds its lists here; ours are always current."""


def visible_sampler_names() -> list[str]:
    return registry.sampler_names()


def find_sampler_config(name: str | None) -> SamplerData | None:
    """A1111's lookup: the exact name (None gives the default sampler); unknown names give None."""
    if name is None:
        return registry.default_sampler()
    return {s.name: s for s in registry.all_samplers()}.get(name)


def get_sampler_and_scheduler(
    sampler_name: str | None, scheduler_name: str | None, *, convert_automatic: bool = True
) -> tuple[str, str]:
    """(sampler name, scheduler label) as A1111 resolves them from a request or infotext.

    A legacy scheduler suffix in the sampler name ("DPM++ 2M Karras") sets the scheduler; an unknown sampler gives
    the default sampler and an unknown scheduler "Automatic"; with ``convert_automatic``, the sampler's own default
    scheduler is reported as "Automatic". Matching is exact (case-sensitive), like A1111's.
    """
    by_name = {s.name: s for s in registry.all_samplers()}
    default = registry.default_sampler()
    found = schedulers_map.get(scheduler_name, schedulers[0]) if scheduler_name is not None else schedulers[0]
    name = sampler_name or default.name
    for scheduler in schedulers:
        for option in (scheduler.label, scheduler.name, *scheduler.aliases):
            if name.endswith(" " + option):
                found = scheduler
                name = name[: -(len(option) + 1)]
                break
    sampler = by_name.get(name, default)
    if convert_automatic and sampler.options.get("scheduler") == found.name:
        found = schedulers[0]
    return sampler.name, found.label


def get_sampler_from_infotext(d: dict[str, Any]) -> str:
    return get_sampler_and_scheduler(d.get("Sampler"), d.get("Schedule type"))[0]


def get_scheduler_from_infotext(d: dict[str, Any]) -> str:
    return get_sampler_and_scheduler(d.get("Sampler"), d.get("Schedule type"))[1]
