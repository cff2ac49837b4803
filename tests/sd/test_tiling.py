"""Tests for modules/sd/tiling.py: circular padding makes conv outputs wrap, and switching back is exact."""

from __future__ import annotations

import torch
from torch import nn

from modules.sd.attention import CastConv2d
from modules.sd.tiling import is_tiling, set_tiling


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.SiLU(), CastConv2d(8, 8, 3, padding=1), nn.SiLU(),
        nn.Conv2d(8, 3, 3, padding=1, padding_mode="reflect"),
    )


def test_tiled_output_wraps_around() -> None:
    """Circular padding makes the net shift-equivariant with wrap-around: rolling the input rolls the output, so the
    left edge continues the right edge (with zero padding the borders break this)."""
    net = small_net()
    x = torch.randn(1, 3, 16, 20)
    rolled = torch.roll(x, shifts=(5, 7), dims=(2, 3))
    with torch.no_grad():
        assert not torch.allclose(torch.roll(net(x), (5, 7), (2, 3)), net(rolled), atol=1e-4)
        set_tiling(net, True)
        out, out_rolled = net(x), net(rolled)
    assert torch.allclose(torch.roll(out, (5, 7), (2, 3)), out_rolled, atol=1e-5)
    # A periodic input gives a periodic output: tiling two copies side by side is seamless.
    with torch.no_grad():
        doubled = net(torch.cat([x, x], dim=3))
    assert torch.allclose(doubled[..., :20], doubled[..., 20:], atol=1e-5)
    assert torch.allclose(doubled[..., :20], out, atol=1e-5)


def test_disable_restores_exact_outputs_and_modes() -> None:
    net = small_net()
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        before = net(x)
        assert set_tiling(net, True) == 3
        assert set_tiling(net, True) == 0  # idempotent
        assert is_tiling(net)
        assert all(m.padding_mode == "circular" for m in net.modules() if isinstance(m, nn.Conv2d))
        assert not torch.equal(net(x), before)
        assert set_tiling(net, False) == 3
        assert set_tiling(net, False) == 0
        after = net(x)
    assert torch.equal(after, before)
    assert not is_tiling(net)
    assert [m.padding_mode for m in net.modules() if isinstance(m, nn.Conv2d)] == ["zeros", "zeros", "reflect"]
