"""The style T2I-Adapter (``t2iadapter_style_sd14v1``, ``coadapter-style-sd15v1``): CLIP image tokens -> text tokens.

Input: the CLIP ViT-L/14 vision tower's ``last_hidden_state`` (N, 257, 1024). Learned ``style_embedding`` tokens are
appended, the sequence runs through a few transformer blocks (``transformer_layes``, the released spelling), and the
last ``num_token`` positions, normalised and projected by ``proj``, become extra cross-attention context
(N, num_token, context_dim) — appended to the prompt's tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .attention_block import LayerNormFP32, ResidualAttentionBlock


@dataclass(frozen=True)
class StyleAdapterConfig:
    """Defaults are the released style adapter (8 tokens, 3 blocks, 8 heads)."""

    width: int = 1024
    context_dim: int = 768
    num_head: int = 8
    layers: int = 3
    num_token: int = 8


class StyleAdapter(nn.Module):
    """(N, L, width) CLIP vision tokens -> (N, num_token, context_dim) style tokens."""

    def __init__(self, config: StyleAdapterConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or StyleAdapterConfig()
        scale = config.width**-0.5
        self.transformer_layes = nn.Sequential(
            *[ResidualAttentionBlock(config.width, config.num_head) for _ in range(config.layers)]
        )
        self.style_embedding = nn.Parameter(torch.randn(1, config.num_token, config.width) * scale)
        self.ln_post = LayerNormFP32(config.width)
        self.ln_pre = LayerNormFP32(config.width)
        self.proj = nn.Parameter(scale * torch.randn(config.width, config.context_dim))

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.style_embedding.to(x.dtype).expand(x.shape[0], -1, -1)
        h = self.ln_pre(torch.cat([x, tokens], dim=1))
        h = self.transformer_layes(h)
        h = self.ln_post(h[:, -self.config.num_token :, :])
        return h @ self.proj.to(h.dtype)
