"""Tests for modules/sd/attention.py: the two attention kernels agree, and CrossAttention does textbook attention."""

from __future__ import annotations

import pytest
import torch

from modules.sd.attention import CrossAttention, SpatialTransformer, sdp_attention, sliced_attention


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    scores = q.double() @ k.double().transpose(-1, -2) / q.shape[-1] ** 0.5
    return (scores.softmax(-1) @ v.double()).to(q.dtype)


@pytest.mark.parametrize(("query_tokens", "key_tokens", "slice_size"), [(64, 64, 16), (100, 77, 33), (5, 9, 1024)])
def test_sliced_equals_sdp_and_naive(query_tokens: int, key_tokens: int, slice_size: int) -> None:
    """sliced_attention and sdp_attention vs a float64 softmax(qk^T/sqrt(d))v; fp32, atol 1e-5."""
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, query_tokens, 8, generator=generator)
    k = torch.randn(2, 3, key_tokens, 8, generator=generator) * 3
    v = torch.randn(2, 3, key_tokens, 8, generator=generator)
    expected = naive_attention(q, k, v)
    torch.testing.assert_close(sdp_attention(q, k, v), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(sliced_attention(q, k, v, slice_size), expected, atol=1e-5, rtol=0)


def test_sliced_equals_sdp_in_bfloat16() -> None:
    """bf16: both kernels within bf16 rounding (atol 2e-2) of each other."""
    generator = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 96, 16, generator=generator).bfloat16() for _ in range(3))
    torch.testing.assert_close(sliced_attention(q, k, v, 40), sdp_attention(q, k, v), atol=2e-2, rtol=0)


@torch.inference_mode()
def test_cross_attention_is_textbook_multi_head_attention() -> None:
    """CrossAttention (fused q/k/v at inference, and both backends) vs attention written out by hand; atol 1e-5."""
    torch.manual_seed(0)
    layer = CrossAttention(query_dim=16, context_dim=12, heads=2, dim_head=8).eval()
    self_layer = CrossAttention(query_dim=16, context_dim=None, heads=2, dim_head=8).eval()
    x, context = torch.randn(2, 10, 16), torch.randn(2, 4, 12)

    def by_hand(attn: CrossAttention, keys_from: torch.Tensor) -> torch.Tensor:
        split = lambda t: t.reshape(2, -1, 2, 8).transpose(1, 2)  # noqa: E731
        q, k, v = split(attn.to_q(x)), split(attn.to_k(keys_from)), split(attn.to_v(keys_from))
        return attn.to_out(naive_attention(q, k, v).transpose(1, 2).reshape(2, -1, 16))

    for backend in ("sdp", "sliced"):
        layer.backend = self_layer.backend = backend
        layer.slice_size = self_layer.slice_size = 3
        torch.testing.assert_close(layer(x, context), by_hand(layer, context), atol=1e-5, rtol=0)
        torch.testing.assert_close(self_layer(x), by_hand(self_layer, x), atol=1e-5, rtol=0)


@torch.inference_mode()
def test_spatial_transformer_conv_and_linear_projections_agree() -> None:
    """SD1's 1x1-conv projections and SD2's Linear ones are the same maths given the same weights (atol 1e-5),
    for contiguous and channels-last inputs."""
    torch.manual_seed(0)
    conv = SpatialTransformer(32, heads=2, dim_head=16, depth=1, context_dim=8, use_linear=False).eval()
    linear = SpatialTransformer(32, heads=2, dim_head=16, depth=1, context_dim=8, use_linear=True).eval()
    state = conv.state_dict()
    for name in ("proj_in.weight", "proj_out.weight"):
        state[name] = state[name].flatten(1)
    linear.load_state_dict(state, strict=True)
    x, context = torch.randn(2, 32, 5, 7), torch.randn(2, 3, 8)
    expected = linear(x, context)
    torch.testing.assert_close(conv(x, context), expected, atol=1e-5, rtol=0)
    channels_last = conv(x.contiguous(memory_format=torch.channels_last), context)
    torch.testing.assert_close(channels_last, expected, atol=1e-5, rtol=0)
    assert (expected - x).abs().max() > 1e-2  # the transformer did something
