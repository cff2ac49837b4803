"""Tests for modules/sd/hashes.py: A1111's sha256 short hash and legacy hash, with an mtime-checked cache."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from modules.sd import hashes


def make_file(path: Path, size: int = 0x100000 + 0x20000) -> bytes:
    data = bytes((i * 7919) % 251 for i in range(size))
    path.write_bytes(data)
    return data


def test_hashes_match_a1111_definitions(tmp_path: Path):
    path = tmp_path / "model.safetensors"
    data = make_file(path)
    full = hashlib.sha256(data).hexdigest()
    assert hashes.sha256_of_file(path) == full
    assert hashes.short_hash(full) == full[:10]
    assert hashes.legacy_model_hash(path) == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]


def test_cache_is_reused_until_the_file_changes(tmp_path: Path, monkeypatch):
    path, cache = tmp_path / "m.ckpt", tmp_path / "cache.json"
    make_file(path, 5000)
    calls = []
    real = hashes.sha256_of_file
    monkeypatch.setattr(hashes, "sha256_of_file", lambda p: calls.append(p) or real(p))
    first = hashes.cached_sha256(path, cache, "checkpoint/m")
    assert hashes.cached_sha256(path, cache, "checkpoint/m") == first
    assert len(calls) == 1
    path.write_bytes(b"different")
    os.utime(path, (1, 1))
    second = hashes.cached_sha256(path, cache, "checkpoint/m")
    assert second == hashlib.sha256(b"different").hexdigest() and len(calls) == 2


def test_corrupt_cache_is_ignored(tmp_path: Path):
    path, cache = tmp_path / "m.ckpt", tmp_path / "cache.json"
    make_file(path, 100)
    cache.write_text("{not json")
    assert hashes.cached_sha256(path, cache, "x") == hashlib.sha256(path.read_bytes()).hexdigest()
