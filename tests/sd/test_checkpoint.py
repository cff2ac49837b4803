"""Tests for modules/sd/checkpoint.py: safetensors reading, the restricted unpickler, damaged files."""

from __future__ import annotations

import collections
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from modules.errors import BadCheckpoint
from modules.sd.checkpoint import SafetensorsFile, read_state_dict


class RunsCode:
    """A pickle payload that would create a marker file if it were ever executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class CustomObject:
    def __init__(self) -> None:
        self.value = 3


def sample_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "f32": torch.randn(3, 5, generator=g),
        "f16": torch.randn(7, generator=g).half(),
        "bf16": torch.randn(2, 2, 2, generator=g).bfloat16(),
        "i64": torch.arange(10),
        "u8": torch.arange(6, dtype=torch.uint8).reshape(2, 3),
        "empty": torch.zeros(0, 4),
        "scalar": torch.tensor(1.5),
    }


def test_safetensors_reader_matches_the_reference_library(tmp_path: Path):
    path = tmp_path / "t.safetensors"
    save_file(sample_tensors(), str(path), metadata={"format": "pt", "modelspec.title": "x"})
    expected = load_file(str(path))
    with SafetensorsFile(path) as f:
        assert sorted(f.names()) == sorted(expected)
        assert f.metadata["modelspec.title"] == "x"
        for key, ref in expected.items():
            assert f.shape(key) == tuple(ref.shape)
            assert torch.equal(f.view(key), ref) and f.view(key).dtype == ref.dtype
            copy = f.read(key, dtype=torch.float32) if ref.is_floating_point() else f.read(key)
            assert torch.equal(copy, ref.to(copy.dtype))
    state = read_state_dict(path)
    assert all(torch.equal(state[k], v) for k, v in expected.items())


@pytest.mark.parametrize("cut", [4, 20, -10])
def test_truncated_safetensors_is_refused_naming_the_file(tmp_path: Path, cut: int):
    path = tmp_path / "model.safetensors"
    save_file(sample_tensors(), str(path))
    data = path.read_bytes()
    path.write_bytes(data[:cut] if cut > 0 else data[:cut])
    with pytest.raises(BadCheckpoint, match="model.safetensors"):
        read_state_dict(path)


def test_garbage_is_refused(tmp_path: Path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + b"\0" * 64)
    with pytest.raises(BadCheckpoint, match="junk.safetensors"):
        read_state_dict(path)
    ckpt = tmp_path / "junk.ckpt"
    ckpt.write_bytes(os.urandom(4096))
    with pytest.raises(BadCheckpoint, match="junk.ckpt"):
        read_state_dict(ckpt)
    with pytest.raises(BadCheckpoint, match="does not exist"):
        read_state_dict(tmp_path / "missing.safetensors")


def test_a_ckpt_that_would_run_code_is_refused_and_the_code_never_runs(tmp_path: Path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "payload": RunsCode(marker)}, path)
    with pytest.raises(BadCheckpoint) as e:
        read_state_dict(path)
    assert "evil.ckpt" in e.value.message and "refused" in e.value.message
    assert "--disable-safe-unpickle" in e.value.hint
    assert not marker.exists()


def test_unsafe_loading_only_when_allowed(tmp_path: Path):
    path = tmp_path / "custom.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "obj": CustomObject()}, path)
    with pytest.raises(BadCheckpoint, match="refused"):
        read_state_dict(path)
    assert torch.equal(read_state_dict(path, allow_unsafe=True)["w"], torch.ones(2))


@pytest.mark.parametrize("zip_format", [True, False])
def test_ordinary_training_checkpoints_load(tmp_path: Path, zip_format: bool):
    """Real SD .ckpt files wrap the weights in `state_dict` beside counters and numpy scalars."""
    path = tmp_path / "sd.ckpt"
    payload = {
        "state_dict": collections.OrderedDict(w=torch.arange(4.0), b=torch.ones(2, dtype=torch.float16)),
        "global_step": 470000,
        "epoch": 6,
        "loss": np.float64(0.12),
    }
    torch.save(payload, path, _use_new_zipfile_serialization=zip_format)
    state = read_state_dict(path)
    assert set(state) == {"w", "b"} and torch.equal(state["w"], torch.arange(4.0))


def test_truncated_ckpt_names_the_file(tmp_path: Path):
    path = tmp_path / "half.ckpt"
    torch.save({"state_dict": {"w": torch.randn(1000)}}, path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(BadCheckpoint, match="half.ckpt"):
        read_state_dict(path)


def test_non_dict_pickle_is_explained(tmp_path: Path):
    path = tmp_path / "list.pt"
    torch.save([torch.ones(1)], path)
    with pytest.raises(BadCheckpoint, match="does not contain a state dict"):
        read_state_dict(path)


def test_upscaler_style_nesting_is_unwrapped(tmp_path: Path):
    """ESRGAN-family .pth files keep their weights under `params_ema` (preferred) or `params`."""
    path = tmp_path / "4x.pth"
    torch.save({"params": {"w": torch.zeros(2)}, "params_ema": {"w": torch.ones(2)}}, path)
    assert torch.equal(read_state_dict(path)["w"], torch.ones(2))
