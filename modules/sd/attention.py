"""Cross-attention and the SpatialTransformer of the Stable Diffusion UNet (CompVis ``ldm/modules/attention.py``).

Attribute names match the original checkpoints (``to_q``, ``to_k``, ``to_v``, ``to_out.0``, ``ff.net.0.proj``,
``norm1..3``, ``proj_in``, ``proj_out``) so ``load_state_dict(strict=True)`` works on real weights.

Attention runs through one of two numerically equivalent kernels:

* ``"sdp"`` — ``torch.nn.functional.scaled_dot_product_attention`` (flash/memory-efficient kernels where available);
* ``"sliced"`` — the same maths computed over chunks of the query tokens, so the ``tokens x tokens`` score matrix is
  never held at once (for low-memory devices and backends without a fused kernel).

Extensions can intercept every attention call through *attention patches* (see :data:`AttentionPatch`): a patch is
called with the per-head ``q, k, v`` tensors and an :class:`AttentionContext` naming the layer, and either returns the
attention output (replacing the kernel) or ``None`` to leave the call alone. The first patch that returns a tensor
wins. A patch that only wants to change ``q``/``k``/``v`` calls ``ctx.default_attention(q, k, v)`` with its changed
tensors and returns the result.

The layers here (``CastLinear``, ``CastConv2d``, ``CastGroupNorm``, ``CastLayerNorm``) are the torch ones, except that
they compute in the dtype of their *input*, casting weights on the fly when the stored dtype differs. That lets a UNet
keep bf16 weights in memory yet run fp32 maths on CPUs without native bf16 kernels, where fp32 is ~8x faster.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

AttentionBackend = Literal["sdp", "sliced"]
DEFAULT_SLICE_SIZE = 1024


@dataclass(frozen=True)
class AttentionContext:
    """What an attention patch knows about the call it intercepts."""

    name: str  # parameter prefix of the layer, e.g. "input_blocks.1.1.transformer_blocks.0.attn2"
    is_cross: bool  # True for attn2 (keys/values come from the text context)
    heads: int
    spatial_shape: tuple[int, int]  # (height, width) of the latent feature map the query tokens come from
    default_attention: Callable[[Tensor, Tensor, Tensor], Tensor]  # the kernel that would run without patches


# (q, k, v, ctx) -> attention output or None. q: (batch, heads, query_tokens, head_dim); k, v: (batch, heads,
# key_tokens, head_dim). A returned tensor must have q's shape.
AttentionPatch = Callable[[Tensor, Tensor, Tensor, AttentionContext], "Tensor | None"]


def inplace_fast_path() -> bool:
    """In-place updates and fused-weight caches only in eager inference: autograd needs the originals, and
    torch.compile cannot trace in-place ops on inference tensors (each would break the graph)."""
    return not torch.is_grad_enabled() and not torch.compiler.is_compiling()


def _cast(tensor: Tensor | None, like: Tensor) -> Tensor | None:
    return tensor if tensor is None or tensor.dtype == like.dtype else tensor.to(like.dtype)


class CastLinear(nn.Linear):
    """nn.Linear computing in its input's dtype (see the module docstring)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, _cast(self.weight, x), _cast(self.bias, x))


class CastConv2d(nn.Conv2d):
    """nn.Conv2d computing in its input's dtype (see the module docstring)."""

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, _cast(self.weight, x), _cast(self.bias, x))


class CastGroupNorm(nn.GroupNorm):
    """nn.GroupNorm computing in its input's dtype (see the module docstring)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.group_norm(x, self.num_groups, _cast(self.weight, x), _cast(self.bias, x), self.eps)


class CastLayerNorm(nn.LayerNorm):
    """nn.LayerNorm computing in its input's dtype (see the module docstring)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, _cast(self.weight, x), _cast(self.bias, x), self.eps)


def sdp_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(q k^T / sqrt(d)) v with PyTorch's fused kernel; tensors are (batch, heads, tokens, head_dim)."""
    return F.scaled_dot_product_attention(q, k, v)


def sliced_attention(q: Tensor, k: Tensor, v: Tensor, slice_size: int = DEFAULT_SLICE_SIZE) -> Tensor:
    """The same result as :func:`sdp_attention`, computed ``slice_size`` query tokens at a time to bound memory."""
    scale = q.shape[-1] ** -0.5
    out = torch.empty_like(q)
    k_t = k.transpose(-1, -2)
    for start in range(0, q.shape[-2], slice_size):
        end = min(start + slice_size, q.shape[-2])
        scores = torch.matmul(q[..., start:end, :], k_t) * scale
        out[..., start:end, :] = torch.matmul(scores.softmax(dim=-1, dtype=torch.float32).to(q.dtype), v)
    return out


class CrossAttention(nn.Module):
    """Multi-head attention; self-attention when ``context`` is None, cross-attention to text tokens otherwise.

    In: x (batch, tokens, query_dim), context (batch, context_tokens, context_dim). Out: (batch, tokens, query_dim).
    """

    def __init__(self, query_dim: int, context_dim: int | None, heads: int, dim_head: int) -> None:
        super().__init__()
        inner_dim = heads * dim_head
        self.heads = heads
        self.is_cross = context_dim is not None
        context_dim = context_dim if context_dim is not None else query_dim
        self.to_q = CastLinear(query_dim, inner_dim, bias=False)
        self.to_k = CastLinear(context_dim, inner_dim, bias=False)
        self.to_v = CastLinear(context_dim, inner_dim, bias=False)
        self.to_out = nn.Sequential(CastLinear(inner_dim, query_dim), nn.Dropout(0.0))
        self.name = ""  # set by the owning UNet to the parameter prefix, for patches
        self.backend: AttentionBackend = "sdp"
        self.slice_size = DEFAULT_SLICE_SIZE
        self._fused_qkv: tuple[tuple[int, int, int, int, int, int], Tensor] | None = None

    def _qkv_weight(self) -> Tensor:
        """to_q/to_k/to_v weights stacked into one matrix, cached until any of them changes (e.g. LoRA patching).

        One (tokens x 3*inner) GEMM is cheaper than three thin ones; the cache key holds each weight's storage
        address and in-place version counter, so swapped or patched weights rebuild it.
        """
        weights = (self.to_q.weight, self.to_k.weight, self.to_v.weight)
        key = tuple(w.data_ptr() for w in weights) + tuple(w._version for w in weights)
        if self._fused_qkv is None or self._fused_qkv[0] != key:
            with torch.no_grad():
                self._fused_qkv = (key, torch.cat(weights, dim=0))
        return self._fused_qkv[1]

    def _can_fuse_qkv(self) -> bool:
        """Fusing bypasses the three Linear modules, so only do it when nothing wraps or hooks them."""
        layers = (self.to_q, self.to_k, self.to_v)
        plain = all(
            type(m) in (CastLinear, nn.Linear) and not m._forward_hooks and not m._forward_pre_hooks for m in layers
        )
        # inference tensors have no version counter, so in-place patches to them could not be noticed
        return plain and not any(m.weight.is_inference() for m in layers)

    def _project_qkv(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        if context is None and inplace_fast_path() and self._can_fuse_qkv():
            return F.linear(x, _cast(self._qkv_weight(), x)).chunk(3, dim=-1)
        context = x if context is None else context
        return self.to_q(x), self.to_k(context), self.to_v(context)

    def default_attention(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """The kernel selected by ``backend``; patches may call it with modified tensors."""
        if self.backend == "sliced":
            return sliced_attention(q, k, v, self.slice_size)
        return sdp_attention(q, k, v)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        patches: Sequence[AttentionPatch] = (),
        spatial_shape: tuple[int, int] = (0, 0),
    ) -> Tensor:
        batch, tokens, _ = x.shape
        q, k, v = self._project_qkv(x, context)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))
        out = None
        if patches:
            ctx = AttentionContext(self.name, self.is_cross, self.heads, spatial_shape, self.default_attention)
            for patch in patches:
                out = patch(q, k, v, ctx)
                if out is not None:
                    break
        if out is None:
            out = self.default_attention(q, k, v)
        out = out.transpose(1, 2).reshape(batch, tokens, -1)
        return self.to_out(out)


class GEGLU(nn.Module):
    """GELU-gated linear unit (Shazeer 2020): one projection yields value and gate halves."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = CastLinear(dim_in, dim_out * 2)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        if not inplace_fast_path():
            return value * F.gelu(gate)
        return F.gelu(gate).mul_(value)


class FeedForward(nn.Module):
    """Transformer MLP with GEGLU; ``net.0.proj`` and ``net.2`` as in the checkpoints."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        inner = dim * mult
        self.net = nn.Sequential(GEGLU(dim, inner), nn.Dropout(0.0), CastLinear(inner, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Self-attention, cross-attention to the text context, then a GEGLU MLP; pre-norm, residual each step."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int) -> None:
        super().__init__()
        self.attn1 = CrossAttention(dim, None, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim, heads, dim_head)
        self.norm1 = CastLayerNorm(dim)
        self.norm2 = CastLayerNorm(dim)
        self.norm3 = CastLayerNorm(dim)

    def forward(
        self, x: Tensor, context: Tensor, patches: Sequence[AttentionPatch], spatial_shape: tuple[int, int]
    ) -> Tensor:
        if not inplace_fast_path():
            x = x + self.attn1(self.norm1(x), None, patches, spatial_shape)
            x = x + self.attn2(self.norm2(x), context, patches, spatial_shape)
            return x + self.ff(self.norm3(x))
        # inference: x is always a fresh intermediate here, so the residual sums can reuse its memory
        x.add_(self.attn1(self.norm1(x), None, patches, spatial_shape))
        x.add_(self.attn2(self.norm2(x), context, patches, spatial_shape))
        return x.add_(self.ff(self.norm3(x)))


class SpatialTransformer(nn.Module):
    """Transformer over the pixels of a feature map, conditioned on text tokens (LDM's SpatialTransformer).

    In/out: (batch, channels, height, width). SD1 projects in/out with 1x1 convs, SD2/SDXL with Linear layers; both
    are applied here as one matrix product over the channel dimension, which is the same maths and lets a
    channels-last input reach the token layout without a copy.
    """

    def __init__(
        self, channels: int, heads: int, dim_head: int, depth: int, context_dim: int, use_linear: bool
    ) -> None:
        super().__init__()
        inner = heads * dim_head
        self.norm = CastGroupNorm(32, channels, eps=1e-6)
        if use_linear:
            self.proj_in: nn.Module = CastLinear(channels, inner)
            self.proj_out: nn.Module = CastLinear(inner, channels)
        else:
            self.proj_in = CastConv2d(channels, inner, kernel_size=1)
            self.proj_out = CastConv2d(inner, channels, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner, heads, dim_head, context_dim) for _ in range(depth)
        )

    @staticmethod
    def _as_linear(layer: nn.Module, x: Tensor) -> Tensor:
        weight = layer.weight
        if weight.dim() == 4:  # 1x1 conv weight (out, in, 1, 1)
            weight = weight.flatten(1)
        return F.linear(x, _cast(weight, x), _cast(layer.bias, x))

    def forward(self, x: Tensor, context: Tensor, patches: Sequence[AttentionPatch] = ()) -> Tensor:
        batch, channels, height, width = x.shape
        h = self.norm(x).permute(0, 2, 3, 1).reshape(batch, height * width, channels)
        h = self._as_linear(self.proj_in, h)
        for block in self.transformer_blocks:
            h = block(h, context, patches, (height, width))
        h = self._as_linear(self.proj_out, h).reshape(batch, height, width, channels).permute(0, 3, 1, 2)
        if inplace_fast_path() and x.is_contiguous(memory_format=torch.channels_last):
            return h.add_(x)  # h already has x's channels-last layout
        return x + h  # x first: the sum keeps x's memory layout
