"""The Stable Diffusion denoising UNet in the layout of CompVis/SGM ``openaimodel.py`` (SD1, SD2, SDXL, refiner).

Parameter names equal the single-file checkpoints' keys under ``model.diffusion_model.`` (``time_embed``,
``label_emb``, ``input_blocks``, ``middle_block``, ``output_blocks``, ``out``), so a stripped checkpoint loads with
``load_state_dict(strict=True)``. Every size comes from :class:`UNetConfig`; the checkpoint detector builds it.

Hook points — pass a :class:`UNetHooks` as ``forward(..., hooks=...)``; nothing is monkey-patched:

* ``input_block_additions[i]`` is added to the features right after input block ``i``, *before* they are stored for
  the skip connection, so it flows both down the encoder and across the skip (T2I-Adapter: SD1 uses 2, 5, 8, 11;
  SDXL 3, 5, 8). ``middle_block_addition`` is added after the middle block (T2I-Adapter on SDXL).
* ``extra_context`` tokens (batch or 1, tokens, context_dim) are appended to the text context of every
  cross-attention (style/image-prompt adapters).
* ``skip_residuals`` (one per input block, in input-block order) are added to the stored skip features only, and
  ``middle_residual`` to the middle block output — ControlNet's convention.
* ``attention_patches`` intercept every attention call; see :mod:`modules.sd.attention` (``AttentionPatch``).

Additive features are cast to the model dtype and nearest-resized when their spatial size differs (latent sizes that
are not multiples of 64 pixels make adapter features disagree by one pixel); a batch of 1 broadcasts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.sd.attention import (
    AttentionBackend,
    AttentionPatch,
    CastConv2d,
    CastGroupNorm,
    CastLinear,
    CrossAttention,
    SpatialTransformer,
    inplace_fast_path,
)


@dataclass(frozen=True)
class UNetConfig:
    """Every size of an openaimodel UNet; defaults are SD1.x."""

    in_channels: int = 4  # 9 for inpainting models
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    transformer_depth: tuple[int, ...] = (1, 1, 1, 0)  # per level; 0 = no SpatialTransformer at that level
    transformer_depth_middle: int = 1  # SDXL base 10; -1 = middle block is a single ResBlock
    context_dim: int = 768  # SD2: 1024, SDXL: 2048, refiner 1280
    num_heads: int = 8  # used when num_head_channels == -1 (SD1)
    num_head_channels: int = -1  # head width (SD2/SDXL: 64)
    use_linear_in_transformer: bool = False  # SD2/SDXL: proj_in/proj_out are Linear, SD1 1x1 Conv
    adm_in_channels: int | None = None  # SDXL base 2816, refiner 2560: builds label_emb


SD15_UNET = UNetConfig()
SD2_UNET = UNetConfig(context_dim=1024, num_head_channels=64, use_linear_in_transformer=True)
SDXL_UNET = UNetConfig(
    channel_mult=(1, 2, 4),
    transformer_depth=(0, 2, 10),
    transformer_depth_middle=10,
    context_dim=2048,
    num_head_channels=64,
    use_linear_in_transformer=True,
    adm_in_channels=2816,
)
SDXL_REFINER_UNET = UNetConfig(
    model_channels=384,
    transformer_depth=(0, 4, 4, 0),
    transformer_depth_middle=4,
    context_dim=1280,
    num_head_channels=64,
    use_linear_in_transformer=True,
    adm_in_channels=2560,
)


@dataclass
class UNetHooks:
    """Optional per-call features and patches for :meth:`UNetModel.forward` (see the module docstring)."""

    input_block_additions: dict[int, Tensor] = field(default_factory=dict)
    middle_block_addition: Tensor | None = None
    extra_context: Tensor | None = None
    skip_residuals: Sequence[Tensor] | None = None
    middle_residual: Tensor | None = None
    attention_patches: Sequence[AttentionPatch] = ()


def timestep_embedding(timesteps: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, cosine half first as the original: (N,) -> (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps.float()[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = F.pad(embedding, (0, 1))
    return embedding


def sdxl_adm_vector(pooled: Tensor, size_conditions: Tensor, dim_per_value: int = 256) -> Tensor:
    """SDXL's ``y``: pooled text embedding followed by a 256-wide sinusoid of each size-condition value.

    ``size_conditions`` is (batch, n): base model (orig_h, orig_w, crop_top, crop_left, target_h, target_w) giving
    1280 + 6*256 = 2816; refiner (orig_h, orig_w, crop_top, crop_left, aesthetic_score) giving 1280 + 5*256 = 2560.
    """
    batch = size_conditions.shape[0]
    sizes = timestep_embedding(size_conditions.flatten(), dim_per_value).reshape(batch, -1)
    return torch.cat([pooled, sizes.to(pooled.dtype)], dim=-1)


class ResBlock(nn.Module):
    """Two 3x3 convs with GroupNorm+SiLU, the timestep embedding added in between, and a residual connection."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(
            CastGroupNorm(32, channels), nn.SiLU(), CastConv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), CastLinear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            CastGroupNorm(32, out_channels),
            nn.SiLU(),
            nn.Dropout(0.0),
            CastConv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip_connection = nn.Identity() if out_channels == channels else CastConv2d(channels, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        if not inplace_fast_path():
            h = self.in_layers(x) + self.emb_layers(emb)[:, :, None, None]
            return self.skip_connection(x) + self.out_layers(h)
        # inference: same maths, updating fresh intermediates in place to save allocations and memory traffic
        norm, _, conv = self.in_layers
        h = conv(F.silu(norm(x), inplace=True))
        h.add_(self.emb_layers(emb)[:, :, None, None])
        norm, _, dropout, conv = self.out_layers
        h = conv(dropout(F.silu(norm(h), inplace=True)))
        return h.add_(self.skip_connection(x))


class Downsample(nn.Module):
    """Strided 3x3 conv halving height and width."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = CastConv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling then a 3x3 conv; the target size comes from the matching skip so odd sizes work."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = CastConv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, output_size: tuple[int, int] | None = None) -> Tensor:
        size = output_size if output_size is not None else (x.shape[-2] * 2, x.shape[-1] * 2)
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class TimestepEmbedSequential(nn.Sequential):
    """A block of layers, each fed what it needs: ResBlocks the embedding, transformers the context."""

    def forward(  # type: ignore[override]
        self,
        x: Tensor,
        emb: Tensor,
        context: Tensor,
        patches: Sequence[AttentionPatch] = (),
        output_size: tuple[int, int] | None = None,
    ) -> Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context, patches)
            elif isinstance(layer, Upsample):
                x = layer(x, output_size)
            else:
                x = layer(x)
        return x


def _fit(feature: Tensor, like: Tensor) -> Tensor:
    """Bring an additive hook feature to ``like``'s dtype, device and spatial size."""
    feature = feature.to(device=like.device, dtype=like.dtype)
    if feature.dim() == like.dim() and feature.shape[-2:] != like.shape[-2:]:
        feature = F.interpolate(feature, size=like.shape[-2:], mode="nearest")
    return feature


class UNetModel(nn.Module):
    """openaimodel UNet: x (batch, in_channels, h, w), timesteps (batch,), context (batch, tokens, context_dim),
    y (batch, adm_in_channels) for SDXL -> noise/v prediction (batch, out_channels, h, w)."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        self._channels_last = False
        self.compute_dtype: torch.dtype | None = None  # None: compute in the weights' dtype
        mc = config.model_channels
        emb_dim = mc * 4
        self.time_embed = nn.Sequential(CastLinear(mc, emb_dim), nn.SiLU(), CastLinear(emb_dim, emb_dim))
        self.label_emb: nn.Sequential | None = None
        if config.adm_in_channels is not None:
            self.label_emb = nn.Sequential(
                nn.Sequential(CastLinear(config.adm_in_channels, emb_dim), nn.SiLU(), CastLinear(emb_dim, emb_dim))
            )

        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(CastConv2d(config.in_channels, mc, 3, padding=1))])
        skip_channels = [mc]
        ch = mc
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb_dim, mult * mc)]
                ch = mult * mc
                if config.transformer_depth[level] > 0:
                    layers.append(self._transformer(ch, config.transformer_depth[level]))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_channels.append(ch)
            if level != len(config.channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch)))
                skip_channels.append(ch)

        middle: list[nn.Module] = [ResBlock(ch, emb_dim, ch)]
        if config.transformer_depth_middle >= 0:
            middle += [self._transformer(ch, config.transformer_depth_middle), ResBlock(ch, emb_dim, ch)]
        self.middle_block = TimestepEmbedSequential(*middle)

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            for i in range(config.num_res_blocks + 1):
                layers = [ResBlock(ch + skip_channels.pop(), emb_dim, mult * mc)]
                ch = mult * mc
                if config.transformer_depth[level] > 0:
                    layers.append(self._transformer(ch, config.transformer_depth[level]))
                if level and i == config.num_res_blocks:
                    layers.append(Upsample(ch))
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(CastGroupNorm(32, ch), nn.SiLU(), CastConv2d(mc, config.out_channels, 3, padding=1))

        for name, module in self.named_modules():
            if isinstance(module, CrossAttention):
                module.name = name

    def _transformer(self, channels: int, depth: int) -> SpatialTransformer:
        cfg = self.config
        if cfg.num_head_channels == -1:
            heads, dim_head = cfg.num_heads, channels // cfg.num_heads
        else:
            heads, dim_head = channels // cfg.num_head_channels, cfg.num_head_channels
        return SpatialTransformer(channels, heads, dim_head, depth, cfg.context_dim, cfg.use_linear_in_transformer)

    def enable_channels_last(self, enabled: bool = True) -> UNetModel:
        """Store conv weights and run activations channels-last (``--opt-channelslast``); faster for oneDNN convs."""
        self._channels_last = enabled
        return self.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)

    def set_compute_dtype(self, dtype: torch.dtype | None) -> None:
        """Run the maths in ``dtype`` whatever the weights are stored in (None: the weights' dtype).

        bf16 weights with fp32 compute halve memory yet keep fp32 speed on CPUs without native bf16 kernels (AVX2-only
        x86), where bf16 convolutions and matmuls fall back to kernels ~8x slower than fp32 ones.
        """
        self.compute_dtype = dtype

    def set_attention_backend(self, backend: AttentionBackend, slice_size: int | None = None) -> None:
        """Choose ``"sdp"`` (fused kernel) or ``"sliced"`` (bounded memory) attention for every layer."""
        for module in self.modules():
            if isinstance(module, CrossAttention):
                module.backend = backend
                if slice_size is not None:
                    module.slice_size = slice_size

    def forward(
        self,
        x: Tensor,
        timesteps: Tensor,
        context: Tensor,
        y: Tensor | None = None,
        *,
        hooks: UNetHooks | None = None,
    ) -> Tensor:
        hooks = hooks if hooks is not None else UNetHooks()
        input_dtype = x.dtype
        dtype = self.compute_dtype or self.time_embed[0].weight.dtype
        x = x.to(dtype)
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        context = context.to(dtype)
        if hooks.extra_context is not None:
            extra = hooks.extra_context.to(device=context.device, dtype=dtype)
            context = torch.cat([context, extra.expand(context.shape[0], -1, -1)], dim=1)

        emb = self._embedding(x, timesteps, y)
        patches = hooks.attention_patches
        if hooks.skip_residuals is not None and len(hooks.skip_residuals) != len(self.input_blocks):
            raise ValueError(f"skip_residuals needs {len(self.input_blocks)} tensors, got {len(hooks.skip_residuals)}")

        skips: list[Tensor] = []
        h = x
        for index, block in enumerate(self.input_blocks):
            h = block(h, emb, context, patches)
            addition = hooks.input_block_additions.get(index)
            if addition is not None:
                h = h + _fit(addition, h)
            skips.append(h)

        h = self.middle_block(h, emb, context, patches)
        for feature in (hooks.middle_block_addition, hooks.middle_residual):
            if feature is not None:
                h = h + _fit(feature, h)

        for block in self.output_blocks:
            skip = skips.pop()
            if hooks.skip_residuals is not None:
                skip = skip + _fit(hooks.skip_residuals[len(skips)], skip)
            h = torch.cat([h, skip], dim=1)
            h = block(h, emb, context, patches, skips[-1].shape[-2:] if skips else None)
        return self.out(h).to(input_dtype).contiguous()

    def _embedding(self, x: Tensor, timesteps: Tensor, y: Tensor | None) -> Tensor:
        timesteps = torch.as_tensor(timesteps, device=x.device)
        if timesteps.dim() == 0:
            timesteps = timesteps.expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels).to(x.dtype))
        if self.label_emb is not None:
            if y is None:
                raise ValueError("this UNet has label_emb (SDXL): pass the ADM vector y")
            emb = emb + self.label_emb(y.to(x.dtype))
        return emb
