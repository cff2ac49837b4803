"""The adapter files a user can pick: names for the dropdown, ``name [hash]`` titles for the infotext, lookup by any
of the spellings a user, an infotext or an sd-webui-controlnet API client sends.

A name is the file's path under ``models/T2I-Adapter`` without its suffix (a diffusers folder keeps its folder
name). The hash is A1111's short hash (first 10 hex digits of the sha256 of the weights file), cached by mtime in
the app's ``cache.json`` so a 300 MB file is read once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from modules.sd import hashes

from .api import list_adapter_files

NONE = "None"
_HASH_SUFFIX = re.compile(r"\s*\[([0-9a-fA-F]{6,64})\]\s*$")


def split_title(text: str) -> tuple[str, str | None]:
    """``"name [abc123]"`` -> ("name", "abc123"); a text without a bracketed hash -> (text, None)."""
    match = _HASH_SUFFIX.search(text)
    if match is None:
        return text.strip(), None
    return text[: match.start()].strip(), match.group(1).lower()


def is_fuser(name: str) -> bool:
    """A CoAdapter fuser file (``coadapter-fuser-sd15v1``), by its released name."""
    return "fuser" in Path(name).name.lower()


def _weights_file(path: Path) -> Path | None:
    """The file whose hash names an adapter: the file itself, or a diffusers folder's weights."""
    if path.is_dir():
        return next(iter(sorted(path.glob("diffusion_pytorch_model*"))), None)
    return path


@dataclass(frozen=True)
class AdapterCatalog:
    """The adapter files in one folder at the time of the scan (``refresh`` by building a new one)."""

    folder: Path
    files: dict[str, Path]
    cache_file: Path | None = None

    @classmethod
    def scan(cls, folder: Path, cache_file: Path | None = None, shipped: Path | None = None) -> AdapterCatalog:
        """The user's ``folder``, then the adapters the extension ships in ``shipped`` (a user file of the same
        name wins)."""
        folder = Path(folder)
        files = {}
        for root in (folder, *([Path(shipped)] if shipped is not None else [])):
            for path in list_adapter_files(root) if root.is_dir() else []:
                relative = path.relative_to(root)
                name = relative.as_posix() if path.is_dir() else relative.with_suffix("").as_posix()
                files.setdefault(name, path)
        return cls(folder, files, cache_file)

    def names(self) -> list[str]:
        return list(self.files)

    def unit_names(self) -> list[str]:
        """The files a unit can use: all but CoAdapter fusers (used by themselves with ``coadapter-*`` units)."""
        return [n for n in self.files if not is_fuser(n)]

    def fuser(self) -> str | None:
        return next((n for n in self.files if is_fuser(n)), None)

    def short_hash(self, name: str) -> str | None:
        """First 10 hex digits of the weights file's sha256 (cached by mtime when there is a cache file)."""
        path = self.files.get(name)
        if path is None:
            return None
        weights = _weights_file(path)
        if weights is None or not weights.is_file():
            return None
        if self.cache_file is not None:
            digest = hashes.cached_sha256(weights, self.cache_file, f"t2i-adapter/{name}")
        else:
            digest = hashes.sha256_of_file(weights)
        return hashes.short_hash(digest)

    def title(self, name: str) -> str:
        """``name [hash]`` as the infotext writes it (just the name when the file cannot be hashed)."""
        digest = self.short_hash(name)
        return f"{name} [{digest}]" if digest else name

    def find(self, text: str | None) -> str | None:
        """The catalog name a text means: ``name``, ``name [hash]`` (any hash length, as sd-webui-controlnet writes
        8 digits), the file name with its suffix, or, when no name matches, a hash of a file here."""
        if text is None:
            return None
        name, digest = split_title(str(text))
        if not name and not digest:
            return None
        lowered = {n.lower(): n for n in self.files}
        for candidate in (name, Path(name).with_suffix("").as_posix() if Path(name).suffix else None):
            if candidate and candidate.lower() in lowered:
                return lowered[candidate.lower()]
        stems = {Path(n).name.lower(): n for n in self.files}
        if name.lower() in stems:
            return stems[name.lower()]
        if digest:
            for candidate_name in self.files:
                full = self.short_hash(candidate_name)
                if full and (full.startswith(digest[:10]) or digest.startswith(full)):
                    return candidate_name
        return None
