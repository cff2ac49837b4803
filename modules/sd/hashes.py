"""A1111's model hashes: the sha256 "short hash" (first 10 hex digits) and the legacy 8-digit "old hash".

Infotexts, the API (`sd-models`) and civitai lookups name models by these, so they must be byte-for-byte A1111's.
Hashing a multi-GB file takes seconds, so results are cached in a JSON file keyed by name and checked by mtime.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path

_cache_lock = threading.Lock()
CHUNK = 1024 * 1024


def sha256_of_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def legacy_model_hash(path: str | os.PathLike[str]) -> str:
    """A1111's old "model hash": sha256 of the 64 KiB at offset 1 MiB, first 8 hex digits."""
    with open(path, "rb") as f:
        f.seek(0x100000)
        return hashlib.sha256(f.read(0x10000)).hexdigest()[:8]


def short_hash(sha256: str) -> str:
    return sha256[:10]


def cached_sha256(path: str | os.PathLike[str], cache_file: str | os.PathLike[str], title: str) -> str:
    """sha256 of `path`, reusing the value cached under `title` while the file's mtime is unchanged."""
    path, cache_file = Path(path), Path(cache_file)
    mtime = path.stat().st_mtime
    with _cache_lock:
        cache = _read_cache(cache_file)
        entry = cache.get("hashes", {}).get(title)
        if entry and entry.get("mtime") == mtime and entry.get("sha256"):
            return entry["sha256"]
    value = sha256_of_file(path)
    with _cache_lock:
        cache = _read_cache(cache_file)
        cache.setdefault("hashes", {})[title] = {"mtime": mtime, "sha256": value}
        _write_cache(cache_file, cache)
    return value


def _read_cache(cache_file: Path) -> dict:
    try:
        data = json.loads(cache_file.read_text(encoding="utf8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(cache_file: Path, cache: dict) -> None:
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=cache_file.name + ".", suffix=".tmp", dir=cache_file.parent)
    with os.fdopen(fd, "w", encoding="utf8") as f:
        json.dump(cache, f, indent=2)
    os.replace(tmp, cache_file)
