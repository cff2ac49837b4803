"""Checkpoint discovery, naming, lookup and loading, with A1111's names so infotexts, the API and scripts agree.

A1111 identifies a checkpoint by many spellings (title, name, stem, old 8-hex hash, 10-hex short hash, full sha256);
`CheckpointInfo.ids` lists them all so any old infotext or API call resolves. The full sha256 takes seconds for a
multi-GB file, so it is read from `cache.json` when already known and otherwise computed only on demand
(`calculate_shorthash`), exactly like A1111 where titles gain their `[shorthash]` after the first load.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import threading
from collections.abc import Iterable
from pathlib import Path

import torch

from modules.devices import DeviceChoice, torch_gc
from modules.errors import ModelNotFound
from modules.paths import DEMO_CHECKPOINT_DIR, Paths
from modules.sd import compile as sd_compile
from modules.sd import hashes, loader, offload
from modules.sd.loader import StableDiffusionModel

log = logging.getLogger(__name__)

CHECKPOINT_EXTENSIONS = (".ckpt", ".safetensors")
VAE_SUFFIXES = (".vae.ckpt", ".vae.safetensors")
_RE_STRIP_CHECKSUM = re.compile(r"\s*\[[^]]+]\s*$")


def _cached_sha256_only(cache_file: Path | None, key: str, path: Path) -> str | None:
    """The sha256 already in `cache_file` for `key` if still valid (same mtime); never hashes the file."""
    if cache_file is None:
        return None
    try:
        data = json.loads(Path(cache_file).read_text(encoding="utf8"))
        entry = data.get("hashes", {}).get(key) if isinstance(data, dict) else None
        if isinstance(entry, dict) and entry.get("mtime") == path.stat().st_mtime and entry.get("sha256"):
            return str(entry["sha256"])
    except (OSError, ValueError, AttributeError):
        return None
    return None


def _relative_name(path: Path, roots: Iterable[Path]) -> str:
    """Path relative to the first root that contains it (forward slashes), else the bare file name (A1111)."""
    for root in roots:
        try:
            return path.resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            continue
    return path.name


class CheckpointInfo:
    """One checkpoint file and all the names A1111 knows it by."""

    def __init__(self, filename: str | os.PathLike[str], *, roots: Iterable[Path] = (),
                 cache_file: Path | None = None, no_hashing: bool = False) -> None:
        path = Path(filename)
        self.filename: str = str(path)
        self.no_hashing = no_hashing
        self.name: str = _relative_name(path, roots)
        self.name_for_extra: str = path.stem
        self.model_name: str = os.path.splitext(self.name.replace("/", "_").replace("\\", "_"))[0]
        self.hash: str | None = None if no_hashing else hashes.legacy_model_hash(path)
        self.sha256: str | None = None if no_hashing else _cached_sha256_only(cache_file, self.cache_key, path)
        self.shorthash: str | None = hashes.short_hash(self.sha256) if self.sha256 else None
        self.title: str = self.name
        self.ids: list[str] = []
        self._refresh_names()

    @property
    def cache_key(self) -> str:
        """Key of this file's entry in `cache.json` (A1111's `checkpoint/<name>`)."""
        return f"checkpoint/{self.name}"

    def _refresh_names(self) -> None:
        self.title = self.name if self.shorthash is None else f"{self.name} [{self.shorthash}]"
        ids = [self.hash, self.model_name, self.title, self.name, self.name_for_extra,
               f"{self.name} [{self.hash}]" if self.hash else None]
        if self.shorthash:
            ids += [self.shorthash, self.sha256, f"{self.name} [{self.shorthash}]",
                    f"{self.name_for_extra} [{self.shorthash}]"]
        self.ids = list(dict.fromkeys(i for i in ids if i))

    def calculate_shorthash(self, cache_file: Path | None) -> str | None:
        """Compute (or read from cache) the full sha256; returns the 10-hex short hash, None with --no-hashing."""
        if self.no_hashing:
            return None
        if self.sha256 is None:
            if cache_file is None:
                self.sha256 = hashes.sha256_of_file(self.filename)
            else:
                self.sha256 = hashes.cached_sha256(self.filename, cache_file, self.cache_key)
        self.shorthash = hashes.short_hash(self.sha256)
        self._refresh_names()
        return self.shorthash

    def __repr__(self) -> str:
        return f"CheckpointInfo({self.title!r})"


def _walk_checkpoints(folder: Path) -> list[Path]:
    """`**/*.ckpt|*.safetensors` under `folder` (symlinks followed, hidden entries and `*.vae.*` skipped)."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for fn in filenames:
            low = fn.lower()
            if fn.startswith(".") or not low.endswith(CHECKPOINT_EXTENSIONS) or low.endswith(VAE_SUFFIXES):
                continue
            found.append(Path(dirpath) / fn)
    return found


def list_models(paths: Paths, ckpt_flag: str | None = None, *, no_hashing: bool = False,
                demo_dir: Path | None = DEMO_CHECKPOINT_DIR) -> dict[str, CheckpointInfo]:
    """All checkpoints by title, sorted case-insensitively by path; the `--ckpt` file comes first when given and the
    shipped demo checkpoint last, so it is the default only when there is no other."""
    user_roots = [Path(d) for d in paths.checkpoint_dirs]
    demo_roots = [Path(demo_dir)] if demo_dir is not None and Path(demo_dir).is_dir() else []
    roots = user_roots + demo_roots
    files: list[Path] = []
    if ckpt_flag:
        ckpt = Path(ckpt_flag).expanduser()
        if ckpt.is_file():
            files.append(ckpt)
        else:
            log.warning("Checkpoint in --ckpt not found: %s", ckpt)
    for group in (user_roots, demo_roots):
        found = [f for root in group if root.is_dir() for f in _walk_checkpoints(root)]
        files += sorted(found, key=lambda p: str(p).lower())
    models: dict[str, CheckpointInfo] = {}
    seen: set[Path] = set()
    for f in files:
        resolved = f.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        info = CheckpointInfo(f, roots=roots, cache_file=paths.cache_file, no_hashing=no_hashing)
        models[info.title] = info
    return models


def checkpoint_aliases(models: dict[str, CheckpointInfo]) -> dict[str, CheckpointInfo]:
    """Every alias → checkpoint; later files win a clash, as A1111's registration order does."""
    aliases: dict[str, CheckpointInfo] = {}
    for info in models.values():
        for alias in info.ids:
            aliases[alias] = info
    return aliases


def get_closest_checkpoint_match(search: str, models: dict[str, CheckpointInfo]) -> CheckpointInfo:
    """Exact alias, else the shortest title containing `search` (then without a trailing `[hash]`), as A1111."""
    if search:
        exact = checkpoint_aliases(models).get(search)
        if exact is not None:
            return exact
        for text in (search, _RE_STRIP_CHECKSUM.sub("", search)):
            if not text:
                continue
            found = sorted((i for i in models.values() if text in i.title), key=lambda i: len(i.title))
            if found:
                return found[0]
    titles = ", ".join(models) or "(none)"
    raise ModelNotFound(f"Checkpoint not found: {search!r}.", f"Available checkpoints: {titles}")


def _move_model(model: StableDiffusionModel, device: torch.device) -> None:
    model.unet.to(device)
    model.vae.to(device)
    for encoder in model.text_encoders.values():
        encoder.to(device)
    model.device = device


def load_checkpoint(info: CheckpointInfo, args: argparse.Namespace, choice: DeviceChoice,
                    paths: Paths) -> StableDiffusionModel:
    """Load `info` as the flags ask.

    `model.extras` gets: `checkpoint_info`, `sha256` (unless --no-hashing), `offload` (the `ModuleShuttle` under
    --medvram/--lowvram) and, with --compile, `compiled_unet`: a compiled callable sharing `model.unet`'s weights.
    `model.unet` itself stays the plain module so hooks, LoRA patching and offload keep working on it.
    """
    device = torch.device(choice.device)
    wants_offload = device.type != "cpu" and bool(args.lowvram or args.medvram or args.medvram_sdxl)
    # Offloaded models are built in CPU memory: building on the GPU first would defeat the point on small cards.
    model = loader.load_model(info.filename, device="cpu" if wants_offload else device, dtype=choice.dtype,
                              vae_dtype=choice.dtype_vae, text_encoder_dtype=choice.dtype_text_encoder,
                              allow_unsafe=bool(args.disable_safe_unpickle))
    if args.opt_channelslast or device.type == "cpu":
        model.unet.enable_channels_last()
    mode = offload.offload_mode(medvram=args.medvram, medvram_sdxl=args.medvram_sdxl, lowvram=args.lowvram,
                                device=device, is_sdxl=model.is_sdxl)
    if mode is not None:
        model.extras["offload"] = offload.setup_offload(model, device, lowvram=mode == "lowvram")
        model.device = device
    elif wants_offload:
        _move_model(model, device)
    if args.compile:
        model.extras["compiled_unet"] = sd_compile.compile_unet(model.unet, paths.data_dir / "cache" / "torch-compile")
    if not args.no_hashing:
        info.calculate_shorthash(paths.cache_file)
        model.extras["sha256"] = info.sha256
    model.extras["checkpoint_info"] = info
    return model


class ModelCache:
    """Holds at most one loaded checkpoint (A1111's `sd_checkpoints_limit` = 1): switching unloads the old one."""

    def __init__(self, args: argparse.Namespace, choice: DeviceChoice, paths: Paths) -> None:
        self.args = args
        self.choice = choice
        self.paths = paths
        self.info: CheckpointInfo | None = None
        self.model: StableDiffusionModel | None = None
        self._lock = threading.RLock()

    def get(self, info: CheckpointInfo) -> StableDiffusionModel:
        """The model for `info`, loaded on first use and reused while it stays the current one."""
        with self._lock:
            if self.model is not None and self.info is not None and self.info.filename == info.filename:
                return self.model
            self.unload()
            self.model = load_checkpoint(info, self.args, self.choice, self.paths)
            self.info = info
            from modules import script_callbacks  # extensions' on_model_loaded

            script_callbacks.model_loaded_callback(self.model)
            return self.model

    def unload(self) -> None:
        """Drop the loaded model (detaching offload hooks) and give memory back."""
        with self._lock:
            if self.model is None:
                return
            # Not `shuttle.remove()`: that would move every part onto the GPU just before dropping it.
            self.model.extras.pop("offload", None)
            self.model = None
            self.info = None
            torch_gc()
