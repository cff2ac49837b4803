"""AFNONet: the AFNO2D mixer against a naive per-mode loop, and FourCastNet checkpoint compatibility.

The naive reference takes the 2-D DFT with numpy in float64 and applies the block-diagonal complex MLP to one Fourier
mode and one block at a time in plain Python; tolerance 1e-5 in fp32. The FourCastNet keys and shapes below are
written from its published configuration (ERA5 720×1440, patch 8, 20 channels, D 768, depth 12, 8 blocks).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from afno_lab.checkpoint import CheckpointError, build, infer_config, load_model, save_model  # noqa: E402
from afno_lab.model import AFNO2D, AFNOConfig, AFNONet  # noqa: E402


def naive_afno2d(x: np.ndarray, layer: AFNO2D, kept) -> np.ndarray:
    """x (B, H, W, C) float64; ``kept(r, c, H, W)`` says whether mode (r, c) goes through the MLP."""
    b_, h_, w_, c_ = x.shape
    nb, bs, lam = layer.num_blocks, layer.block_size, layer.sparsity_threshold
    w1 = layer.w1.detach().double().numpy()
    b1 = layer.b1.detach().double().numpy()
    w2 = layer.w2.detach().double().numpy()
    b2 = layer.b2.detach().double().numpy()
    spec = np.fft.rfft2(x, axes=(1, 2), norm="ortho")
    out = np.zeros_like(spec)

    def shrink(v: float) -> float:
        return float(np.sign(v) * max(abs(v) - lam, 0.0))

    for b in range(b_):
        for r in range(h_):
            for c in range(w_ // 2 + 1):
                if not kept(r, c, h_, w_):
                    continue
                for blk in range(nb):
                    z = spec[b, r, c, blk * bs:(blk + 1) * bs]
                    hid_re = np.maximum(z.real @ w1[0, blk] - z.imag @ w1[1, blk] + b1[0, blk], 0)
                    hid_im = np.maximum(z.imag @ w1[0, blk] + z.real @ w1[1, blk] + b1[1, blk], 0)
                    o_re = hid_re @ w2[0, blk] - hid_im @ w2[1, blk] + b2[0, blk]
                    o_im = hid_im @ w2[0, blk] + hid_re @ w2[1, blk] + b2[1, blk]
                    for i in range(bs):
                        out[b, r, c, blk * bs + i] = shrink(o_re[i]) + 1j * shrink(o_im[i])
    return np.fft.irfft2(out, s=(h_, w_), axes=(1, 2), norm="ortho") + x


def _low_band(fraction: float):
    def kept(r: int, c: int, h: int, w: int) -> bool:
        return min(r, h - r) < int((h // 2 + 1) * fraction) and c < int((w // 2 + 1) * fraction)

    return kept


def _fourcastnet_band(fraction: float):
    def kept(r: int, c: int, h: int, w: int) -> bool:
        total = h // 2 + 1
        k = int(total * fraction)
        return total - k <= r < total + k and c < k

    return kept


@pytest.mark.parametrize(
    ("band", "fraction", "size", "kept"),
    [
        ("low", 1.0, (8, 8), lambda r, c, h, w: True),
        ("low", 0.5, (8, 8), _low_band(0.5)),
        ("low", 0.6, (6, 10), _low_band(0.6)),
        ("fourcastnet", 1.0, (8, 8), lambda r, c, h, w: True),
        ("fourcastnet", 0.5, (8, 8), _fourcastnet_band(0.5)),
        ("fourcastnet", 1.0, (6, 12), _fourcastnet_band(1.0)),  # wider than tall: upper W modes dropped
    ],
)
def test_afno2d_matches_naive_per_mode_loop(band: str, fraction: float, size: tuple[int, int], kept) -> None:
    torch.manual_seed(0)
    layer = AFNO2D(16, num_blocks=4, sparsity_threshold=0.01, hard_thresholding_fraction=fraction, mode_band=band)
    with torch.no_grad():  # larger weights than the 0.02 init, so ReLU and soft-shrink both act on some modes
        for p in layer.parameters():
            p.mul_(15)
    x = torch.randn(2, *size, 16)
    got = layer(x).detach().double().numpy()
    want = naive_afno2d(x.double().numpy(), layer, kept)
    assert np.abs(got - want).max() < 1e-5
    spectral = got - x.double().numpy()
    assert np.abs(spectral).max() > 1e-2  # the mixer did something (not just the residual)


def test_truncation_really_drops_modes() -> None:
    torch.manual_seed(1)
    full = AFNO2D(8, num_blocks=2, hard_thresholding_fraction=1.0)
    half = AFNO2D(8, num_blocks=2, hard_thresholding_fraction=0.5)
    half.load_state_dict(full.state_dict())
    x = torch.randn(1, 8, 8, 8)
    assert (full(x) - half(x)).abs().max() > 1e-4


def test_afno2d_runs_in_fp32_under_bf16_autocast() -> None:
    layer = AFNO2D(16, num_blocks=4)
    x = torch.randn(1, 8, 8, 16, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    reference = layer(x.float())
    assert (y.float() - reference).abs().max() < 0.1


def fourcastnet_state_dict(prefix: str = "module.") -> dict[str, torch.Tensor]:
    """Random tensors under FourCastNet's key names and shapes at its published configuration."""
    d, c, p, depth, nb = 768, 20, 8, 12, 8
    bs = d // nb
    shapes: dict[str, tuple[int, ...]] = {
        "patch_embed.proj.weight": (d, c, p, p), "patch_embed.proj.bias": (d,), "pos_embed": (1, 90 * 180, d),
        "norm.weight": (d,), "norm.bias": (d,), "head.weight": (c * p * p, d),
    }
    for i in range(depth):
        shapes.update({
            f"blocks.{i}.norm1.weight": (d,), f"blocks.{i}.norm1.bias": (d,),
            f"blocks.{i}.filter.w1": (2, nb, bs, bs), f"blocks.{i}.filter.b1": (2, nb, bs),
            f"blocks.{i}.filter.w2": (2, nb, bs, bs), f"blocks.{i}.filter.b2": (2, nb, bs),
            f"blocks.{i}.norm2.weight": (d,), f"blocks.{i}.norm2.bias": (d,),
            f"blocks.{i}.mlp.fc1.weight": (4 * d, d), f"blocks.{i}.mlp.fc1.bias": (4 * d,),
            f"blocks.{i}.mlp.fc2.weight": (d, 4 * d), f"blocks.{i}.mlp.fc2.bias": (d,),
        })
    g = torch.Generator().manual_seed(0)
    return {prefix + k: torch.randn(s, generator=g) * 0.02 for k, s in shapes.items()}


def test_fourcastnet_state_dict_loads_strictly_and_gives_the_right_shape() -> None:
    state = fourcastnet_state_dict()
    net = build(state)  # strips "module.", infers the architecture, load_state_dict(strict=True)
    assert net.config.img_size == (720, 1440) and net.config.patch_size == (8, 8)
    assert (net.config.in_chans, net.config.out_chans, net.config.embed_dim, net.config.depth) == (20, 20, 768, 12)
    assert net.config.num_blocks == 8 and net.config.mode_band == "fourcastnet"
    assert sum(p.numel() for p in net.parameters()) == 74_691_840  # 74.69M, as counted from the code's shapes
    assert torch.equal(net.blocks[11].filter.w2, state["module.blocks.11.filter.w2"])
    with torch.device("meta"):  # the full 720×1440 forward costs ~2 TFLOP; shapes are checked on the meta device
        meta_net = AFNONet(net.config)
        out = meta_net(torch.empty(1, 20, 720, 1440))
    assert out.shape == (1, 20, 720, 1440)
    del state["module.blocks.3.filter.b2"]
    with pytest.raises(CheckpointError, match="blocks.3.filter.b2"):
        build(state)


def test_fourcastnet_style_file_round_trip_and_head_layout(tmp_path: Path) -> None:
    """A torch.save'd {"model_state": {"module.…"}} file (FourCastNet's format) at a small size loads and runs the
    same; the head's output is un-patchified in FourCastNet's (p1 p2 c) order."""
    torch.manual_seed(0)
    net = AFNONet(AFNOConfig(img_size=(16, 32), patch_size=(4, 4), in_chans=3, out_chans=2, embed_dim=16, depth=2,
                             num_blocks=4))
    path = tmp_path / "best_ckpt.tar"
    torch.save({"iters": 5, "epoch": 1, "model_state": {"module." + k: v for k, v in net.state_dict().items()}}, path)
    loaded, info, _ = load_model(path, img_size=(16, 32))
    assert info is None
    x = torch.randn(2, 3, 16, 32)
    assert torch.allclose(loaded(x), net(x), atol=1e-6)
    tokens = net.head(net.forward_features(x))  # (B, h, w, p1·p2·c)
    out = net(x)
    assert torch.equal(out[1, 1, 4 * 2 + 3, 4 * 5 + 1], tokens[1, 2, 5, (3 * 4 + 1) * 2 + 1])
    with pytest.raises(CheckpointError, match="not a square grid"):
        load_model(path)  # 4×8 tokens: the image size must be given


def test_lab_file_keeps_config_and_rejects_junk(tmp_path: Path) -> None:
    net = AFNONet(AFNOConfig(img_size=(16, 16), embed_dim=16, depth=1, num_blocks=4, hard_thresholding_fraction=0.5))
    path = save_model(tmp_path / "m.safetensors", net)
    again, _, _ = load_model(path)
    assert again.config.hard_thresholding_fraction == 0.5 and again.config == net.config
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="could not be read"):
        load_model(junk)
    with pytest.raises(CheckpointError, match="missing"):
        infer_config({"foo": torch.zeros(1)})
    with pytest.raises(ValueError, match="takes 16x16"):
        net(torch.randn(1, 1, 32, 32))
