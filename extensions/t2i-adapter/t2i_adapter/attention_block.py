"""The CLIP-style pre-norm transformer block shared by the style adapter and the CoAdapter fuser.

Keys: ``attn.in_proj_weight/in_proj_bias/out_proj.*`` (``nn.MultiheadAttention``), ``ln_1``, ``ln_2``,
``mlp.c_fc``, ``mlp.c_proj``. Inputs here are batch-first (N, L, D); the maths equals the original's sequence-first
layout.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn


class LayerNormFP32(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the weights' dtype (as CLIP does for fp16)."""

    def forward(self, x: Tensor) -> Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        out = nn.functional.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps)
        return out.to(x.dtype)


class QuickGELU(nn.Module):
    """CLIP's GELU approximation x * sigmoid(1.702 x)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """x + attn(ln_1(x)), then + mlp(ln_2(x)); (N, L, width) -> (N, L, width)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_1 = LayerNormFP32(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, width * 4)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(width * 4, width)),
        ]))
        self.ln_2 = LayerNormFP32(width)

    def forward(self, x: Tensor) -> Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))
