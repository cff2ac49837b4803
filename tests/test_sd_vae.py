"""Tests for modules/sd_vae.py: the VAE list, A1111's "Automatic"/"None"/file choices, loading an external VAE in the
standalone layout (or with the checkpoint prefix), exact restore of the checkpoint's own VAE, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from modules import sd_vae
from modules.errors import BadCheckpoint
from modules.model_selection import prepare_model
from modules.options import Options
from modules.processing_prompts import EMBEDDING_DB_KEY
from modules.sd.loader import load_model
from modules.shared_options import options_templates
from tests.sd.factory import write_tiny_checkpoint


@pytest.fixture
def model(tmp_path: Path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    return load_model(write_tiny_checkpoint("sd1", folder, name="tiny"))


def perturbed_vae(model, scale: float = 0.2, prefix: str = "") -> dict[str, torch.Tensor]:
    """The model's VAE with every weight changed a little, as a standalone (or prefixed) state dict."""
    g = torch.Generator().manual_seed(1)
    return {prefix + k: (v + torch.randn(v.shape, generator=g) * scale).contiguous()
            for k, v in model.vae.state_dict().items()}


def decode(model) -> torch.Tensor:
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return model.vae.decode_latent(latent)


def test_list_and_resolve(tmp_path: Path) -> None:
    vae_dir, extra = tmp_path / "VAE", tmp_path / "more"
    (vae_dir / "sub").mkdir(parents=True)
    extra.mkdir()
    for path in (vae_dir / "b.safetensors", vae_dir / "sub" / "A.pt", vae_dir / "notes.txt", extra / "c.ckpt",
                 extra / "b.safetensors"):
        path.write_bytes(b"x")
    files = sd_vae.list_vae_files([vae_dir, extra, tmp_path / "missing"])
    assert list(files) == ["A.pt", "b.safetensors", "c.ckpt"] and files["b.safetensors"].parent == vae_dir

    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"x")
    assert sd_vae.resolve_vae("Automatic", ckpt, files) is None
    sidecar = tmp_path / "model.vae.pt"
    sidecar.write_bytes(b"x")
    assert sd_vae.resolve_vae("Automatic", ckpt, files) == sidecar
    assert sd_vae.resolve_vae("None", ckpt, files) is None
    assert sd_vae.resolve_vae("c.ckpt", ckpt, files) == extra / "c.ckpt"
    assert sd_vae.resolve_vae("gone.safetensors", ckpt, files) is None  # warned, falls back to the checkpoint's own
    assert sd_vae.resolve_vae("None", ckpt, files, vae_path_flag=str(extra / "c.ckpt")) == extra / "c.ckpt"


@pytest.mark.parametrize("prefix", ["", "first_stage_model."])
def test_external_vae_changes_decode_and_none_restores_exactly(model, tmp_path: Path, prefix: str) -> None:
    original = decode(model)
    own = {k: v.clone() for k, v in model.vae.state_dict().items()}
    path = tmp_path / "other.safetensors"
    save_file({**perturbed_vae(model, prefix=prefix), "loss.logvar": torch.zeros(1)}, str(path))

    assert sd_vae.apply_vae(model, path, cache_file=tmp_path / "cache.json")
    assert model.extras["vae_name"] == "other.safetensors" and len(model.extras["vae_hash"]) == 10
    changed = decode(model)
    assert not torch.allclose(changed, original, atol=1e-3)
    assert not sd_vae.apply_vae(model, path)  # already there: nothing reloaded

    assert sd_vae.apply_vae(model, None)
    assert model.extras["vae_name"] is None and model.extras["vae_hash"] is None
    assert torch.equal(decode(model), original)
    assert all(torch.equal(v, own[k]) for k, v in model.vae.state_dict().items())


def test_setting_through_prepare_model(model, tmp_path: Path) -> None:
    vae_dir, emb_dir = tmp_path / "VAE", tmp_path / "embeddings"
    vae_dir.mkdir()
    save_file(perturbed_vae(model), str(vae_dir / "x.safetensors"))
    paths = type("P", (), {"vae_dirs": (vae_dir,), "embeddings_dir": emb_dir, "cache_file": tmp_path / "c.json"})()
    args = type("A", (), {"vae_path": None, "no_hashing": True, "disable_safe_unpickle": False})()
    opts = Options(options_templates)
    original = decode(model)
    opts.set("sd_vae", "x.safetensors")
    prepare_model(model, opts, paths, args)
    assert model.extras["vae_name"] == "x.safetensors" and model.extras["vae_hash"] is None
    assert not torch.allclose(decode(model), original, atol=1e-3)
    assert model.extras[EMBEDDING_DB_KEY].embedding_dirs[str(emb_dir)].path == str(emb_dir)
    opts.set("sd_vae", "Automatic")
    prepare_model(model, opts, paths, args)
    assert torch.equal(decode(model), original) and model.extras["vae_name"] is None


def test_wrong_vae_files_are_clear_errors(model, tmp_path: Path) -> None:
    original = decode(model)
    partial = tmp_path / "partial.safetensors"
    save_file({k: v for k, v in perturbed_vae(model).items() if not k.startswith("decoder.")}, str(partial))
    with pytest.raises(BadCheckpoint, match="partial.safetensors.*missing"):
        sd_vae.apply_vae(model, partial)
    wide = tmp_path / "wide.safetensors"
    save_file({k: torch.zeros(*v.shape[:-1], v.shape[-1] + 1) if k == "quant_conv.bias" else v
               for k, v in perturbed_vae(model).items()}, str(wide))
    with pytest.raises(BadCheckpoint, match="quant_conv.bias"):
        sd_vae.apply_vae(model, wide)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a pickle at all")
    with pytest.raises(BadCheckpoint, match="garbage.pt"):
        sd_vae.apply_vae(model, garbage)
    assert torch.equal(decode(model), original)  # nothing was half-applied
