"""Text encoders of the Stable Diffusion families, in plain torch, named exactly like checkpoint keys.

Two layouts exist in single-file checkpoints:

* ``CLIPTextEncoder``: OpenAI CLIP ViT-L/14 in Hugging Face transformers' layout, parameters
  ``transformer.text_model.*`` (SD1 under ``cond_stage_model.``, SDXL's first embedder under
  ``conditioner.embedders.0.``). QuickGELU, causal self-attention, final LayerNorm.
* ``OpenCLIPTextEncoder``: an OpenCLIP text tower, parameters ``model.*`` (SD2 ViT-H under ``cond_stage_model.``,
  SDXL bigG under ``conditioner.embedders.1.``). Packed q/k/v (``attn.in_proj_weight``), GELU, ``ln_final`` and a
  ``text_projection`` applied as ``x @ text_projection``.

Both return a ``TextEncoding``: the hidden states of a chosen layer, optionally through the final LayerNorm, and the
pooled vector (final LayerNorm of the last layer at the end-of-text token, the argmax of the token ids, projected
when the model has a projection). Which layer and whether to normalise depends on the family:

* SD1 CLIP-L: ``skip_last_layers=0, apply_final_norm=True``. A1111's clip skip N takes ``hidden_states[-N]`` and
  then the final norm, i.e. ``skip_last_layers=N-1, apply_final_norm=True``.
* SD2 OpenCLIP-H: ``skip_last_layers=1, apply_final_norm=True``. ldm's ``FrozenOpenCLIPEmbedder(layer=
  "penultimate")`` runs all blocks but the last, then ``ln_final``; diffusers gets the same by converting the tower
  to a 23-layer ``CLIPTextModel`` and using its ``last_hidden_state`` (which has the final norm).
* SDXL CLIP-L: ``skip_last_layers=1, apply_final_norm=False``. sgm's ``layer="hidden", layer_idx=11`` is
  diffusers' ``hidden_states[-2]``, which has no final norm.
* SDXL OpenCLIP-bigG: ``skip_last_layers=1, apply_final_norm=False`` (sgm ``layer="penultimate", legacy=False``,
  diffusers ``hidden_states[-2]``); its pooled vector (``ln_final`` of the last block at EOT, times
  ``text_projection``) is diffusers' ``text_embeds`` and feeds SDXL's ADM conditioning.

Callers that only need hidden states pass ``need_pooled=False`` so the skipped last layers are not computed.
Textual inversion replaces token vectors: pass ``input_embeds`` (from ``embed_tokens`` with rows overwritten).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class CLIPTextConfig:
    """Sizes of a Hugging Face-layout CLIP text model (SD1 ViT-L/14, SDXL CLIP-L)."""

    vocab_size: int = 49408
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_positions: int = 77
    activation: str = "quick_gelu"


@dataclass(frozen=True)
class OpenCLIPTextConfig:
    """Sizes of an OpenCLIP text tower (SD2 ViT-H, SDXL bigG); the MLP is 4 * width wide."""

    vocab_size: int = 49408
    width: int = 1024
    layers: int = 24
    heads: int = 16
    context_length: int = 77
    projection_dim: int | None = 1024
    activation: str = "gelu"


SD1_CLIP_L = CLIPTextConfig()
SDXL_CLIP_L = CLIPTextConfig()
SD2_OPENCLIP_H = OpenCLIPTextConfig()
SDXL_OPENCLIP_BIGG = OpenCLIPTextConfig(width=1280, layers=32, heads=20, projection_dim=1280)


@dataclass
class TextEncoding:
    """What a text encoder returns.

    hidden: [B, T, D], output of layer ``num_layers - skip_last_layers`` (final norm applied iff requested).
    pooled: [B, D or projection_dim], or None when the caller passed ``need_pooled=False``.
    """

    hidden: Tensor
    pooled: Tensor | None


def quick_gelu(x: Tensor) -> Tensor:
    """The sigmoid approximation of GELU that OpenAI CLIP was trained with."""
    return x * torch.sigmoid(1.702 * x)


_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"quick_gelu": quick_gelu, "gelu": F.gelu}


def _activation(name: str) -> Callable[[Tensor], Tensor]:
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def causal_attention(q: Tensor, k: Tensor, v: Tensor, heads: int) -> Tensor:
    """Multi-head causal self-attention on [B, T, D] projections, via SDP attention (flash/memory-efficient)."""
    batch, length, width = q.shape

    def split(t: Tensor) -> Tensor:
        return t.view(batch, length, heads, width // heads).transpose(1, 2)

    out = F.scaled_dot_product_attention(split(q), split(k), split(v), is_causal=True)
    return out.transpose(1, 2).reshape(batch, length, width)


def _encode(
    x: Tensor,
    tokens: Tensor,
    layers: Sequence[nn.Module],
    final_norm: nn.Module,
    projection: Tensor | None,
    skip_last_layers: int,
    apply_final_norm: bool,
    need_pooled: bool,
) -> TextEncoding:
    """Run the transformer stack once, taking the hidden states part-way and the pooled vector at the end."""
    if not 0 <= skip_last_layers < len(layers):
        raise ValueError(f"skip_last_layers must be in [0, {len(layers) - 1}], got {skip_last_layers}")
    stop = len(layers) - skip_last_layers
    for layer in layers[:stop]:
        x = layer(x)
    hidden = final_norm(x) if apply_final_norm else x
    if not need_pooled:
        return TextEncoding(hidden=hidden, pooled=None)
    for layer in layers[stop:]:
        x = layer(x)
    # LayerNorm works per token, so normalising only the end-of-text rows equals normalising everything first.
    end_of_text = tokens.argmax(dim=-1)
    pooled = final_norm(x[torch.arange(x.shape[0], device=x.device), end_of_text])
    if projection is not None:
        pooled = pooled @ projection
    return TextEncoding(hidden=hidden, pooled=pooled)


def _check_tokens(tokens: Tensor, max_length: int) -> None:
    if tokens.dim() != 2:
        raise ValueError(f"tokens must be [batch, length], got shape {tuple(tokens.shape)}")
    if tokens.shape[1] > max_length:
        raise ValueError(f"{tokens.shape[1]} tokens exceed the encoder's {max_length} positions")


# --- Hugging Face CLIP layout -------------------------------------------------------------------------------------


class _CLIPAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.out_proj(causal_attention(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.heads))


class _CLIPMLP(nn.Module):
    def __init__(self, width: int, inner: int, activation: str) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, inner)
        self.fc2 = nn.Linear(inner, width)
        self.activation = _activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.activation(self.fc1(x)))


class _CLIPEncoderLayer(nn.Module):
    """Pre-norm transformer block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, config: CLIPTextConfig) -> None:
        super().__init__()
        self.self_attn = _CLIPAttention(config.hidden_size, config.num_heads)
        self.layer_norm1 = nn.LayerNorm(config.hidden_size)
        self.mlp = _CLIPMLP(config.hidden_size, config.intermediate_size, config.activation)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class _CLIPEmbeddings(nn.Module):
    def __init__(self, config: CLIPTextConfig) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = nn.Embedding(config.max_positions, config.hidden_size)


class _CLIPEncoder(nn.Module):
    def __init__(self, config: CLIPTextConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_CLIPEncoderLayer(config) for _ in range(config.num_layers))


class _CLIPTextTransformer(nn.Module):
    def __init__(self, config: CLIPTextConfig) -> None:
        super().__init__()
        self.embeddings = _CLIPEmbeddings(config)
        self.encoder = _CLIPEncoder(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size)


class _CLIPTransformerHolder(nn.Module):
    """Only exists so that parameter names start with ``transformer.text_model.`` like the checkpoints."""

    def __init__(self, config: CLIPTextConfig) -> None:
        super().__init__()
        self.text_model = _CLIPTextTransformer(config)


class CLIPTextEncoder(nn.Module):
    """OpenAI CLIP text model in transformers' key layout (SD1, SDXL's first encoder). Tokens [B, T<=77] in."""

    def __init__(self, config: CLIPTextConfig = SD1_CLIP_L) -> None:
        super().__init__()
        self.config = config
        self.transformer = _CLIPTransformerHolder(config)
        self._init_weights()

    def _init_weights(self) -> None:
        # Checkpoints overwrite all of this; a sane init only matters for tests and untrained demo models.
        embeddings = self.transformer.text_model.embeddings
        nn.init.normal_(embeddings.token_embedding.weight, std=0.02)
        nn.init.normal_(embeddings.position_embedding.weight, std=0.01)

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        """Token vectors [B, T, D] before positions are added; textual inversion overwrites rows of this."""
        return self.transformer.text_model.embeddings.token_embedding(tokens)

    def forward(
        self,
        tokens: Tensor,
        *,
        skip_last_layers: int = 0,
        apply_final_norm: bool = True,
        need_pooled: bool = True,
        input_embeds: Tensor | None = None,
    ) -> TextEncoding:
        """Encode token ids [B, T]; ``input_embeds`` [B, T, D] replaces the token-embedding lookup if given."""
        _check_tokens(tokens, self.config.max_positions)
        model = self.transformer.text_model
        x = self.embed_tokens(tokens) if input_embeds is None else input_embeds
        x = x + model.embeddings.position_embedding.weight[: tokens.shape[1]]
        return _encode(
            x,
            tokens,
            model.encoder.layers,
            model.final_layer_norm,
            None,
            skip_last_layers,
            apply_final_norm,
            need_pooled,
        )


def fix_clip_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Make an SD1/SDXL CLIP-L state dict (prefix up to ``transformer.`` kept) loadable with strict=True.

    Drops the ``position_ids`` buffer that old transformers versions saved, and renames the pre-2022 layout
    ``transformer.{embeddings,encoder,final_layer_norm}.`` to ``transformer.text_model.…``.
    """
    legacy = ("transformer.embeddings.", "transformer.encoder.", "transformer.final_layer_norm.")
    fixed: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.endswith("embeddings.position_ids"):
            continue
        if key.startswith(legacy):
            key = "transformer.text_model." + key[len("transformer.") :]
        fixed[key] = value
    return fixed


# --- OpenCLIP layout ----------------------------------------------------------------------------------------------


class _PackedSelfAttention(nn.Module):
    """Named like ``nn.MultiheadAttention`` (``in_proj_weight`` holds q, k, v stacked) but runs SDP attention."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        return self.out_proj(causal_attention(q, k, v, self.heads))


class _OpenCLIPMLP(nn.Module):
    def __init__(self, width: int, activation: str) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.c_proj = nn.Linear(4 * width, width)
        self.activation = _activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(self.activation(self.c_fc(x)))


class _ResidualAttentionBlock(nn.Module):
    """Pre-norm block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: OpenCLIPTextConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.width)
        self.attn = _PackedSelfAttention(config.width, config.heads)
        self.ln_2 = nn.LayerNorm(config.width)
        self.mlp = _OpenCLIPMLP(config.width, config.activation)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class _OpenCLIPTransformer(nn.Module):
    def __init__(self, config: OpenCLIPTextConfig) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(_ResidualAttentionBlock(config) for _ in range(config.layers))


class _OpenCLIPTextTower(nn.Module):
    def __init__(self, config: OpenCLIPTextConfig) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.width)
        self.positional_embedding = nn.Parameter(torch.empty(config.context_length, config.width))
        self.transformer = _OpenCLIPTransformer(config)
        self.ln_final = nn.LayerNorm(config.width)
        self.text_projection: nn.Parameter | None = None
        if config.projection_dim is not None:
            self.text_projection = nn.Parameter(torch.empty(config.width, config.projection_dim))


class OpenCLIPTextEncoder(nn.Module):
    """OpenCLIP text tower in its own key layout (SD2 ViT-H, SDXL bigG). Tokens [B, T<=77] in, zero-padded."""

    def __init__(self, config: OpenCLIPTextConfig = SD2_OPENCLIP_H) -> None:
        super().__init__()
        self.config = config
        self.model = _OpenCLIPTextTower(config)
        self._init_weights()

    def _init_weights(self) -> None:
        # Checkpoints overwrite all of this; a sane init only matters for tests and untrained demo models.
        nn.init.normal_(self.model.token_embedding.weight, std=0.02)
        nn.init.normal_(self.model.positional_embedding, std=0.01)
        if self.model.text_projection is not None:
            nn.init.normal_(self.model.text_projection, std=1 / math.sqrt(self.config.width))

    @property
    def hidden_size(self) -> int:
        return self.config.width

    @property
    def num_layers(self) -> int:
        return self.config.layers

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        """Token vectors [B, T, D] before positions are added; textual inversion overwrites rows of this."""
        return self.model.token_embedding(tokens)

    def forward(
        self,
        tokens: Tensor,
        *,
        skip_last_layers: int = 0,
        apply_final_norm: bool = True,
        need_pooled: bool = True,
        input_embeds: Tensor | None = None,
    ) -> TextEncoding:
        """Encode token ids [B, T]; ``input_embeds`` [B, T, D] replaces the token-embedding lookup if given."""
        _check_tokens(tokens, self.config.context_length)
        tower = self.model
        x = self.embed_tokens(tokens) if input_embeds is None else input_embeds
        x = x + tower.positional_embedding[: tokens.shape[1]]
        return _encode(
            x,
            tokens,
            tower.transformer.resblocks,
            tower.ln_final,
            tower.text_projection,
            skip_last_layers,
            apply_final_norm,
            need_pooled,
        )


_OPEN_CLIP_EXTRAS = ("model.logit_scale", "model.attn_mask")


def fix_open_clip_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop what real SD2/SDXL files carry besides the text tower: ``logit_scale``, ``attn_mask``, ``visual.*``."""
    return {
        key: value
        for key, value in state_dict.items()
        if key not in _OPEN_CLIP_EXTRAS and not key.startswith("model.visual.")
    }
