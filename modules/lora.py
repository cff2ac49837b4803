"""The ``<lora:name:te[:unet[:dyn]]>`` extra network: LoRA files in folders, activation, "Lora hashes" infotext.

A1111 behaviour kept (``extensions-builtin/Lora``):

* Files: ``.safetensors``/``.pt``/``.ckpt`` under the LoRA folders, recursively; a network's name is its file stem; the
  kohya metadata ``ss_output_name`` is an alias when it names no other file.
* Arguments: ``<lora:name:te>`` sets both multipliers, ``<lora:name:te:unet>`` them separately, a 4th positional or
  ``dyn=`` limits the rank; ``te=``/``unet=`` name them (default 1.0; unet defaults to te).
* A name that matches no file is reported ("Lora not found: …") and skipped, never fatal; so is a file that fails to
  load. Keys of a file that match no layer are counted and logged.
* Weights stay merged after a generation; the next activation with a different set restores the originals first, and
  activating with no networks restores them (A1111 calls every network's ``activate`` even when unmentioned).
* "Lora hashes": ``name: hash12, …`` with ``:`` and ``,`` removed from the name as written in the prompt; hash12 is the
  first 12 hex digits of metadata ``sshs_model_hash`` if present, else kohya's addnet hash (sha256 of the safetensors
  data after the header), else for pickles the file's sha256.

Core code: no UI or web imports; the caller passes the model and copies ``extra_generation_params`` into its job.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from modules.errors import AtelierError, InvalidRequest
from modules.sd.hashes import sha256_of_file
from modules.sd.loader import StableDiffusionModel
from modules.sd.lora import (
    LORA_SUFFIXES,
    ApplyReport,
    LoraApplication,
    LoraNetwork,
    addnet_hash,
    load_lora_file,
    merge_loras,
    merge_state,
    read_safetensors_metadata,
    restore_weights,
)

log = logging.getLogger(__name__)

_hash_cache: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def lora_file_hash(path: Path) -> str:
    """A1111's LoRA hash (full hex): addnet hash for safetensors, file sha256 otherwise; cached by size and mtime."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _hash_lock:
        if key in _hash_cache:
            return _hash_cache[key]
    value = addnet_hash(path) if path.suffix.lower() == ".safetensors" else sha256_of_file(path)
    with _hash_lock:
        _hash_cache[key] = value
    return value


@dataclass(eq=False)
class LoraOnDisk:
    """A LoRA file found in a LoRA folder; metadata and hash are read on first use."""

    name: str
    path: Path
    _metadata: dict[str, str] | None = field(default=None, repr=False)
    _hash: str | None = field(default=None, repr=False)

    @property
    def is_safetensors(self) -> bool:
        return self.path.suffix.lower() == ".safetensors"

    @property
    def metadata(self) -> dict[str, str]:
        if self._metadata is None:
            try:
                self._metadata = read_safetensors_metadata(self.path) if self.is_safetensors else {}
            except (OSError, AtelierError) as e:
                log.warning("Could not read the metadata of %s: %s", self.path, e)
                self._metadata = {}
        return self._metadata

    @property
    def alias(self) -> str:
        return self.metadata.get("ss_output_name") or self.name

    @property
    def sd_version(self) -> str:
        """"SDXL", "SD2", "SD1" from kohya's training metadata, or "Unknown" (A1111's ``SdVersion``)."""
        if str(self.metadata.get("ss_base_model_version", "")).startswith("sdxl_"):
            return "SDXL"
        if str(self.metadata.get("ss_v2", "")) == "True":
            return "SD2"
        return "SD1" if self.metadata else "Unknown"

    @property
    def hash(self) -> str:
        if self._hash is None:
            self._hash = self.metadata.get("sshs_model_hash") or lora_file_hash(self.path)
        return self._hash

    @property
    def shorthash(self) -> str:
        return self.hash[:12]


def list_lora_files(dirs: Iterable[str | os.PathLike[str]]) -> dict[str, LoraOnDisk]:
    """Every LoRA file under `dirs` by name (file stem), in sorted walk order; the first of equal names wins."""
    found: dict[str, LoraOnDisk] = {}
    for folder in dirs:
        for root, subdirs, files in os.walk(folder, followlinks=True):
            subdirs.sort()
            for filename in sorted(files):
                path = Path(root) / filename
                if path.suffix.lower() not in LORA_SUFFIXES:
                    continue
                if path.stem in found:
                    log.warning("Two LoRA files are named %r; using %s, ignoring %s", path.stem,
                                found[path.stem].path, path)
                    continue
                found[path.stem] = LoraOnDisk(path.stem, path)
    return found


@dataclass(frozen=True)
class LoraRequest:
    """One ``<lora:…>`` tag's arguments, as A1111 parses them."""

    name: str
    te_multiplier: float = 1.0
    unet_multiplier: float = 1.0
    dyn_dim: int | None = None

    @classmethod
    def from_args(cls, items: Sequence[object]) -> LoraRequest:
        """``["name", "0.8", "unet=0.5", "dyn=8"]``: strings with one ``=`` are named, the rest positional."""
        positional: list[object] = []
        named: dict[str, str] = {}
        for item in items:
            parts = item.split("=", 2) if isinstance(item, str) else [item]
            if len(parts) == 2:
                named[parts[0]] = parts[1]
            else:
                positional.append(item)
        if not positional or not str(positional[0]).strip():
            raise InvalidRequest("A <lora:…> tag needs a network name.", "Write it as <lora:name:0.8>.")
        name = str(positional[0])
        try:
            te = float(named.get("te", positional[1] if len(positional) > 1 else 1.0))
            unet = float(named.get("unet", positional[2] if len(positional) > 2 else te))
            dyn_value = named.get("dyn", positional[3] if len(positional) > 3 else None)
            dyn = int(dyn_value) if dyn_value is not None else None
        except (TypeError, ValueError) as e:
            raise InvalidRequest(f"<lora:{name}:…> has an argument that is not a number: {e}.",
                                 "Use <lora:name:te_weight:unet_weight>, e.g. <lora:name:0.8:0.5>.") from e
        return cls(name, te, unet, dyn)


@dataclass
class ActiveLora:
    """A network merged into the model: the name as the prompt wrote it, its file, arguments and merge report."""

    mentioned_name: str
    entry: LoraOnDisk
    request: LoraRequest
    report: ApplyReport


@dataclass
class LoraActivation:
    """Outcome of one activation: what is merged, what was not found or failed, and the infotext it implies."""

    active: list[ActiveLora] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def hashes_infotext(self) -> str | None:
        parts = []
        for item in self.active:
            shorthash = item.entry.shorthash
            alias = item.mentioned_name.replace(":", "").replace(",", "")
            if shorthash and alias:
                parts.append(f"{alias}: {shorthash}")
        return ", ".join(parts) or None

    @property
    def extra_generation_params(self) -> dict[str, str]:
        value = self.hashes_infotext
        return {"Lora hashes": value} if value else {}

    @property
    def comments(self) -> list[str]:
        """Messages for the user (A1111 shows "Lora not found" among the generation's comments)."""
        messages = [f"Lora not found: {', '.join(self.not_found)}"] if self.not_found else []
        messages += [f"Lora {name} could not be loaded: {message}" for name, message in self.failed.items()]
        return messages


def _request_from(params: object) -> LoraRequest:
    if isinstance(params, LoraRequest):
        return params
    items = getattr(params, "items", params)  # A1111's ExtraNetworkParams has .items
    if callable(items) or not isinstance(items, Sequence) or isinstance(items, str):
        raise InvalidRequest(f"Unexpected LoRA arguments: {params!r}.")
    return LoraRequest.from_args(items)


class LoraNetworks:
    """The LoRA extra network: files in `dirs`, parsed networks cached, merged into a model on activation."""

    name = "lora"
    aliases = ("lyco",)

    def __init__(self, dirs: Sequence[str | os.PathLike[str]], *, allow_unsafe: bool = False,
                 cache_size: int = 8) -> None:
        self.dirs = [Path(d) for d in dirs]
        self.allow_unsafe = allow_unsafe
        self.cache_size = cache_size
        self.available: dict[str, LoraOnDisk] = {}
        self._aliases: dict[str, LoraOnDisk] = {}
        self._cache: OrderedDict[tuple[str, int], LoraNetwork] = OrderedDict()
        self._lock = threading.RLock()

    def list_available(self) -> dict[str, LoraOnDisk]:
        """Rescan the folders; each safetensors header is read for its ``ss_output_name`` alias."""
        with self._lock:
            self.available = list_lora_files(self.dirs)
            self._aliases = {}
            counts: dict[str, int] = {}
            for entry in self.available.values():
                counts[entry.alias] = counts.get(entry.alias, 0) + 1
            for entry in self.available.values():
                if entry.alias not in self.available and counts[entry.alias] == 1:
                    self._aliases[entry.alias] = entry
            return self.available

    def find(self, name: str) -> LoraOnDisk | None:
        return self.available.get(name) or self._aliases.get(name)

    def load(self, entry: LoraOnDisk) -> LoraNetwork:
        """The parsed network of `entry`, from the cache while the file is unchanged."""
        key = (str(entry.path), entry.path.stat().st_mtime_ns)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        network = load_lora_file(entry.path, allow_unsafe=self.allow_unsafe)
        with self._lock:
            self._cache[key] = network
            while len(self._cache) > max(self.cache_size, 1):
                self._cache.popitem(last=False)
        return network

    def activate(self, model: StableDiffusionModel, params_list: Sequence[object]) -> LoraActivation:
        """Merge exactly the requested networks into `model` (none: restore the originals).

        `params_list` items are `LoraRequest`s, A1111 ``ExtraNetworkParams`` (``.items``) or plain argument lists.
        """
        requests = [_request_from(params) for params in params_list]
        activation = LoraActivation()
        if any(self.find(r.name) is None for r in requests):
            self.list_available()
        loaded: list[tuple[LoraRequest, LoraOnDisk, LoraNetwork]] = []
        for request in requests:
            entry = self.find(request.name)
            if entry is None:
                activation.not_found.append(request.name)
                continue
            try:
                loaded.append((request, entry, self.load(entry)))
            except (AtelierError, OSError) as e:
                activation.failed[request.name] = str(e)
                log.error("LoRA %s could not be loaded: %s", entry.path, e)
        signature = tuple((str(e.path), e.path.stat().st_mtime_ns, r.te_multiplier, r.unet_multiplier, r.dyn_dim)
                          for r, e, _ in loaded)
        state = merge_state(model)
        if signature and state.signature == signature and state.reports is not None:
            reports = state.reports
        else:
            applications = [LoraApplication(network, r.te_multiplier, r.unet_multiplier, r.dyn_dim, e.name)
                            for r, e, network in loaded]
            reports = merge_loras(model, applications, signature=signature)
        for (request, entry, _), report in zip(loaded, reports, strict=True):
            if report.skipped:
                log.warning("LoRA %s: %s", entry.path.name, report.summary())
            activation.active.append(ActiveLora(request.name, entry, request, report))
        for message in activation.comments:
            log.warning(message)
        return activation

    def deactivate(self, model: StableDiffusionModel) -> None:
        """Nothing to do: as in A1111, weights stay merged until an activation asks for a different set."""

    def restore(self, model: StableDiffusionModel) -> int:
        """Put the model's original weights back now (e.g. before saving or merging checkpoints)."""
        return restore_weights(model)
