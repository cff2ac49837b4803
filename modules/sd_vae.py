"""The ``sd_vae`` setting: which VAE weights decode (and encode) images, A1111's names and rules.

* ``"Automatic"``: a file named like the checkpoint (``<stem>.vae.safetensors`` / ``.vae.pt`` / ``.vae.ckpt``) beside
  it, else the checkpoint's own VAE;
* ``"None"``: the checkpoint's own VAE;
* a name from :func:`list_vae_files` (a file in ``models/VAE`` or ``--vae-dir``): that file.

``--vae-path`` overrides the setting. External files use the standalone LDM key layout (``encoder.*``,
``decoder.*``, ``quant_conv.*``...); a ``first_stage_model.`` prefix is stripped. The checkpoint's own VAE weights
are copied to the CPU the first time another VAE replaces them, so switching back restores them exactly. What is
loaded is recorded in ``model.extras`` (``vae_file``, ``vae_name``, ``vae_hash``), which the infotext reads.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from modules.errors import BadCheckpoint
from modules.sd import hashes
from modules.sd.checkpoint import read_state_dict
from modules.sd.vae import fix_vae_state_dict

log = logging.getLogger(__name__)

AUTOMATIC, NONE = "Automatic", "None"
VAE_EXTENSIONS = (".safetensors", ".pt", ".ckpt")
SIDECAR_SUFFIXES = (".vae.safetensors", ".vae.pt", ".vae.ckpt")
BASE_STATE_KEY = "vae_base_state"
"""``model.extras`` key of the CPU copy of the checkpoint's own VAE weights (made on the first switch)."""


def list_vae_files(vae_dirs: Iterable[str | os.PathLike[str]]) -> dict[str, Path]:
    """File name → path for every VAE file under ``vae_dirs`` (recursive), sorted by name; first folder wins a clash."""
    found: dict[str, Path] = {}
    for folder in vae_dirs:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in sorted(filenames):
                if filename.lower().endswith(VAE_EXTENSIONS) and not filename.startswith("."):
                    found.setdefault(filename, Path(dirpath) / filename)
    return dict(sorted(found.items(), key=lambda item: item[0].lower()))


def sidecar_vae(checkpoint: str | os.PathLike[str] | None) -> Path | None:
    """``<stem>.vae.safetensors`` (or ``.vae.pt`` / ``.vae.ckpt``) next to the checkpoint, if there is one."""
    if checkpoint is None:
        return None
    path = Path(checkpoint)
    stem = path.name.rsplit(".", 1)[0]
    for suffix in SIDECAR_SUFFIXES:
        candidate = path.with_name(stem + suffix)
        if candidate.is_file():
            return candidate
    return None


def resolve_vae(setting: str | None, checkpoint: str | os.PathLike[str] | None, vae_files: dict[str, Path],
                vae_path_flag: str | None = None) -> Path | None:
    """The VAE file the setting asks for, or None for the checkpoint's own VAE."""
    if vae_path_flag:
        flagged = Path(vae_path_flag).expanduser()
        if flagged.is_file():
            return flagged
        log.warning("The VAE in --vae-path was not found: %s; using the VAE setting instead.", flagged)
    setting = setting or AUTOMATIC
    if setting == NONE:
        return None
    if setting == AUTOMATIC:
        return sidecar_vae(checkpoint)
    if setting in vae_files:
        return vae_files[setting]
    log.warning("VAE %r not found in the VAE folders; using the checkpoint's own VAE.", setting)
    return None


def read_vae_state_dict(path: str | os.PathLike[str], *, allow_unsafe: bool = False) -> dict[str, torch.Tensor]:
    """A VAE file's weights under the `AutoencoderKL` names (prefix and training keys dropped)."""
    path = Path(path)
    state = read_state_dict(path, allow_unsafe=allow_unsafe)
    if any(key.startswith("first_stage_model.") for key in state):
        state = {k: v for k, v in state.items() if k.startswith("first_stage_model.")}
    return fix_vae_state_dict(state)


def _file_id(path: Path) -> str:
    return f"{path.resolve()}:{path.stat().st_mtime}"


def _load_weights(vae: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Copy ``state`` into the VAE's existing tensors (keeping their device and dtype); all keys must be there."""
    expected = vae.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise BadCheckpoint(f"{what} is not a VAE for this model: {len(missing)} weights missing, e.g. {missing[:3]}.",
                            "Pick a VAE made for this model family, or 'None' for the checkpoint's own.")
    wrong = [k for k in expected if tuple(state[k].shape) != tuple(expected[k].shape)]
    if wrong:
        raise BadCheckpoint(f"{what} does not fit this model: {wrong[0]} has shape {tuple(state[wrong[0]].shape)}, "
                            f"the model needs {tuple(expected[wrong[0]].shape)}.",
                            "Pick a VAE made for this model family, or 'None' for the checkpoint's own.")
    with torch.no_grad():
        vae.load_state_dict({k: state[k] for k in expected}, strict=True)


def apply_vae(model: Any, path: Path | None, *, allow_unsafe: bool = False, cache_file: Path | None = None,
              no_hashing: bool = False) -> bool:
    """Put the VAE from ``path`` (None: the checkpoint's own) into ``model``; False when it was already there."""
    extras = model.extras
    wanted = _file_id(path) if path is not None else None
    if extras.get("vae_file") == wanted:
        return False
    vae = model.vae
    if path is None:
        base = extras.get(BASE_STATE_KEY)
        if base is not None:
            _load_weights(vae, base, "The checkpoint's own VAE")
    else:
        state = read_vae_state_dict(path, allow_unsafe=allow_unsafe)
        if BASE_STATE_KEY not in extras:
            extras[BASE_STATE_KEY] = {k: v.detach().to("cpu", copy=True) for k, v in vae.state_dict().items()}
        _load_weights(vae, state, path.name)
        log.info("Loaded VAE weights from %s", path)
    extras["vae_file"] = wanted
    extras["vae_name"] = path.name if path is not None else None
    extras["vae_hash"] = _vae_hash(path, cache_file) if path is not None and not no_hashing else None
    return True


def _vae_hash(path: Path, cache_file: Path | None) -> str:
    """A1111's "VAE hash": the first 10 hex digits of the file's sha256 (cached like checkpoint hashes)."""
    title = f"vae/{path.name}"
    full = hashes.cached_sha256(path, cache_file, title) if cache_file else hashes.sha256_of_file(path)
    return hashes.short_hash(full)


def apply_vae_setting(model: Any, setting: str | None, vae_dirs: Iterable[str | os.PathLike[str]], *,
                      vae_path_flag: str | None = None, allow_unsafe: bool = False, cache_file: Path | None = None,
                      no_hashing: bool = False) -> Path | None:
    """Resolve ``setting`` for this model's checkpoint and apply it; returns the external VAE file or None."""
    checkpoint = getattr(model, "path", None)
    path = resolve_vae(setting, checkpoint, list_vae_files(vae_dirs), vae_path_flag)
    apply_vae(model, path, allow_unsafe=allow_unsafe, cache_file=cache_file, no_hashing=no_hashing)
    return path
