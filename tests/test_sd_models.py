"""Checkpoint discovery, A1111 names/aliases/hashes, lookup errors and the one-model cache, on tiny checkpoints."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from modules import sd_models
from modules.cmd_args import parse_args
from modules.devices import DeviceChoice
from modules.errors import ModelNotFound
from modules.paths import Paths, paths_from_args
from modules.sd import hashes
from tests.sd.factory import write_tiny_checkpoint

CPU = DeviceChoice(device=torch.device("cpu"), dtype=torch.float32, dtype_vae=torch.float32,
                   dtype_text_encoder=torch.float32)


def _setup(tmp_path: Path, *flags: str) -> tuple[argparse.Namespace, Paths]:
    args = parse_args(["--data-dir", str(tmp_path / "data"), *flags], environ={})
    paths = paths_from_args(args, cwd=tmp_path)
    paths.checkpoint_dirs[0].mkdir(parents=True, exist_ok=True)
    return args, paths


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny SD1 checkpoint, written once and copied where each test needs it."""
    return write_tiny_checkpoint("sd1", tmp_path_factory.mktemp("tiny"), name="tiny")


def _place(tiny: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(tiny.read_bytes())
    return dest


def test_listing_names_and_vae_exclusion(tmp_path: Path, tiny: Path) -> None:
    args, paths = _setup(tmp_path)
    sd_dir = paths.checkpoint_dirs[0]
    _place(tiny, sd_dir / "b.safetensors")
    _place(tiny, sd_dir / "Sub" / "A.ckpt")
    _place(tiny, sd_dir / "c.vae.safetensors")
    _place(tiny, sd_dir / "d.vae.ckpt")
    (sd_dir / "notes.txt").write_text("x")
    models = sd_models.list_models(paths, demo_dir=None)
    assert [i.name for i in models.values()] == ["b.safetensors", "Sub/A.ckpt"]
    info = models["Sub/A.ckpt"]
    assert info.name_for_extra == "A"
    assert info.model_name == "Sub_A"
    assert info.hash == hashes.legacy_model_hash(info.filename)
    assert info.shorthash is None and info.title == "Sub/A.ckpt"


def test_hashes_titles_and_aliases(tmp_path: Path, tiny: Path) -> None:
    args, paths = _setup(tmp_path)
    path = _place(tiny, paths.checkpoint_dirs[0] / "sub" / "model.safetensors")
    info = next(iter(sd_models.list_models(paths, demo_dir=None).values()))
    full = hashes.sha256_of_file(path)
    assert info.calculate_shorthash(paths.cache_file) == full[:10]
    assert info.sha256 == full
    assert info.title == f"sub/model.safetensors [{full[:10]}]"
    for alias in ("sub_model", info.title, "sub/model.safetensors", "model", f"sub/model.safetensors [{info.hash}]",
                  full[:10], full, f"model [{full[:10]}]"):
        assert alias in info.ids
    # A later listing takes the sha256 from cache.json without hashing again.
    again = next(iter(sd_models.list_models(paths, demo_dir=None).values()))
    assert again.sha256 == full and again.title == info.title


def test_closest_match_and_error(tmp_path: Path, tiny: Path) -> None:
    args, paths = _setup(tmp_path)
    _place(tiny, paths.checkpoint_dirs[0] / "anime.safetensors")
    _place(tiny, paths.checkpoint_dirs[0] / "anime-v2-large.safetensors")
    models = sd_models.list_models(paths, demo_dir=None)
    assert sd_models.get_closest_checkpoint_match("anime", models).name == "anime.safetensors"
    assert sd_models.get_closest_checkpoint_match("v2", models).name == "anime-v2-large.safetensors"
    assert sd_models.get_closest_checkpoint_match("anime [deadbeef00]", models).name == "anime.safetensors"
    with pytest.raises(ModelNotFound) as err:
        sd_models.get_closest_checkpoint_match("photoreal", models)
    assert "anime.safetensors" in err.value.hint and "anime-v2-large.safetensors" in err.value.hint


def test_ckpt_flag_and_demo_dir(tmp_path: Path, tiny: Path) -> None:
    args, paths = _setup(tmp_path)
    outside = _place(tiny, tmp_path / "elsewhere" / "cli.safetensors")
    demo = tmp_path / "demo"
    _place(tiny, demo / "demo.safetensors")
    models = sd_models.list_models(paths, str(outside), demo_dir=demo)
    assert list(models) == ["cli.safetensors", "demo.safetensors"]


def test_demo_checkpoint_is_the_default_only_without_others(tmp_path: Path, tiny: Path) -> None:
    """The demo folder sorts before "Stable-diffusion" by path, yet a user's checkpoint must come first."""
    args, paths = _setup(tmp_path)
    demo = tmp_path / "models" / "demo"
    _place(tiny, demo / "atelier-demo.safetensors")
    assert list(sd_models.list_models(paths, demo_dir=demo)) == ["atelier-demo.safetensors"]
    _place(tiny, paths.checkpoint_dirs[0] / "zzz-real.safetensors")
    assert list(sd_models.list_models(paths, demo_dir=demo)) == ["zzz-real.safetensors", "atelier-demo.safetensors"]


def test_no_hashing(tmp_path: Path, tiny: Path) -> None:
    args, paths = _setup(tmp_path, "--no-hashing")
    _place(tiny, paths.checkpoint_dirs[0] / "m.safetensors")
    info = next(iter(sd_models.list_models(paths, no_hashing=True, demo_dir=None).values()))
    assert info.hash is None and info.calculate_shorthash(paths.cache_file) is None
    model = sd_models.load_checkpoint(info, args, CPU, paths)
    assert "sha256" not in model.extras and info.title == "m.safetensors"
    assert not paths.cache_file.exists()


def test_cache_loads_once_and_records_hash(tmp_path: Path, tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args, paths = _setup(tmp_path)
    _place(tiny, paths.checkpoint_dirs[0] / "one.safetensors")
    _place(tiny, paths.checkpoint_dirs[0] / "two.safetensors")
    first, second = sd_models.list_models(paths, demo_dir=None).values()
    calls: list[str] = []
    real = sd_models.loader.load_model

    def counting(path: str, **kw: object) -> object:
        calls.append(Path(path).name)
        return real(path, **kw)

    monkeypatch.setattr(sd_models.loader, "load_model", counting)
    cache = sd_models.ModelCache(args, CPU, paths)
    model = cache.get(first)
    assert cache.get(first) is model and calls == ["one.safetensors"]
    assert model.extras["sha256"] == hashes.sha256_of_file(first.filename)
    assert model.extras["checkpoint_info"] is first and "compiled_unet" not in model.extras
    assert model.unet.input_blocks[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    other = cache.get(second)
    assert other is not model and calls == ["one.safetensors", "two.safetensors"]
    cache.unload()
    assert cache.model is None
    cache.get(second)
    assert calls[-1] == "two.safetensors" and len(calls) == 3


def test_compile_keeps_unet_module(tmp_path: Path, tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args, paths = _setup(tmp_path, "--compile", "--no-hashing")
    _place(tiny, paths.checkpoint_dirs[0] / "c.safetensors")
    info = next(iter(sd_models.list_models(paths, demo_dir=None).values()))
    seen: list[Path | None] = []

    def fake_compile(unet: torch.nn.Module, cache_dir: Path | None = None) -> object:
        seen.append(cache_dir)
        return lambda *a: unet(*a)

    monkeypatch.setattr(sd_models.sd_compile, "compile_unet", fake_compile)
    model = sd_models.load_checkpoint(info, args, CPU, paths)
    assert callable(model.extras["compiled_unet"]) and isinstance(model.unet, torch.nn.Module)
    assert seen == [paths.data_dir / "cache" / "torch-compile"]
