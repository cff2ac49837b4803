"""Extra networks in prompts: `<name:arg1:arg2:key=value>` tags (LoRA, hypernetworks, ...), A1111-compatible.

Tags are cut out of the prompt text and collected per network name. Networks register here; before sampling every
registered network is activated, with its tags' parameters or with an empty list so it can switch itself off.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

re_extra_net = re.compile(r"<(\w+):([^>]+)>")

extra_network_registry: dict[str, ExtraNetwork] = {}
extra_network_aliases: dict[str, ExtraNetwork] = {}


class ExtraNetworkParams:
    """The colon-separated arguments of one tag; `key=value` items are named, the rest positional."""

    def __init__(self, items: list | None = None):
        self.items = items or []
        self.positional: list = []
        self.named: dict[str, str] = {}
        for item in self.items:
            # Like A1111: only an item with exactly one "=" is named ("a=b=c" stays positional).
            parts = item.split("=", 2) if isinstance(item, str) else [item]
            if len(parts) == 2:
                self.named[parts[0]] = parts[1]
            else:
                self.positional.append(item)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExtraNetworkParams) and self.items == other.items

    __hash__ = None  # mutable and compared by items, as in A1111

    def __repr__(self) -> str:
        return f"ExtraNetworkParams(items={self.items!r})"


class ExtraNetwork:
    """Base class for a kind of extra network; `name` is the tag name users write (`<name:...>`)."""

    def __init__(self, name: str):
        self.name = name

    def activate(self, p: Any, params_list: list[ExtraNetworkParams]) -> None:
        """Apply the network for this generation; an empty list means "not used now": undo any effect."""
        raise NotImplementedError

    def deactivate(self, p: Any) -> None:
        """Housekeeping after the generation."""
        raise NotImplementedError


def initialize() -> None:
    extra_network_registry.clear()
    extra_network_aliases.clear()


def register_extra_network(extra_network: ExtraNetwork) -> None:
    extra_network_registry[extra_network.name] = extra_network


def register_extra_network_alias(extra_network: ExtraNetwork, alias: str) -> None:
    extra_network_aliases[alias] = extra_network


def parse_prompt(prompt: str) -> tuple[str, defaultdict[str, list[ExtraNetworkParams]]]:
    """Remove the `<name:args>` tags from a prompt and collect their parameters per name, in prompt order."""
    found: defaultdict[str, list[ExtraNetworkParams]] = defaultdict(list)

    def collect(match: re.Match) -> str:
        found[match.group(1)].append(ExtraNetworkParams(items=match.group(2).split(":")))
        return ""

    return re_extra_net.sub(collect, prompt), found


parse_extra_networks = parse_prompt


def parse_prompts(prompts: Iterable[str]) -> tuple[list[str], defaultdict[str, list[ExtraNetworkParams]] | None]:
    """Strip tags from every prompt; like A1111, only the first prompt's tags decide which networks are active."""
    stripped = []
    extra_data = None
    for prompt in prompts:
        text, data = parse_prompt(prompt)
        if extra_data is None:
            extra_data = data
        stripped.append(text)
    return stripped, extra_data


def lookup_extra_networks(extra_network_data: dict[str, list]) -> dict[ExtraNetwork, list[ExtraNetworkParams]]:
    """Map tag names (or aliases, e.g. `lyco` for `lora`) to registered networks; unknown names are skipped."""
    result: dict[ExtraNetwork, list[ExtraNetworkParams]] = {}
    for name, params in list(extra_network_data.items()):
        network = extra_network_registry.get(name)
        if network is None:
            network = extra_network_aliases.get(name)
        if network is None:
            log.info("Skipping unknown extra network: %s", name)
            continue
        result.setdefault(network, []).extend(params)
    return result


def activate(p: Any, extra_network_data: dict[str, list]) -> None:
    """Activate the networks named in the prompt, then every other registered one with an empty list."""
    activated = []
    for network, params in lookup_extra_networks(extra_network_data).items():
        try:
            network.activate(p, params)
            activated.append(network)
        except Exception:
            log.exception("Error activating extra network %s with arguments %s", network.name, params)
    for name, network in extra_network_registry.items():
        if network in activated:
            continue
        try:
            network.activate(p, [])
        except Exception:
            log.exception("Error activating extra network %s", name)
    _after_activate_callback(p, extra_network_data)


def _after_activate_callback(p: Any, extra_network_data: dict[str, list]) -> None:
    """Scripts' `after_extra_networks_activate` hook, when processing runs with scripts."""
    hook = getattr(getattr(p, "scripts", None), "after_extra_networks_activate", None)
    if hook is None:  # no scripts, or a partial runner without this hook
        return
    hook(
        p,
        batch_number=getattr(p, "iteration", 0),
        prompts=getattr(p, "prompts", []),
        seeds=getattr(p, "seeds", []),
        subseeds=getattr(p, "subseeds", []),
        extra_network_data=extra_network_data,
    )


def deactivate(p: Any, extra_network_data: dict[str, list]) -> None:
    """Deactivate the networks named in the prompt, then every other registered one."""
    named = lookup_extra_networks(extra_network_data)
    for network in named:
        try:
            network.deactivate(p)
        except Exception:
            log.exception("Error deactivating extra network %s", network.name)
    for name, network in extra_network_registry.items():
        if network in named:
            continue
        try:
            network.deactivate(p)
        except Exception:
            log.exception("Error deactivating unmentioned extra network %s", name)
