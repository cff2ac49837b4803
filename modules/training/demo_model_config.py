"""Sizes of the embedded demo model, built from the ordinary SD1 building blocks (UNetConfig, VAEConfig, CLIP).

Every size is one the checkpoint detector reads back from tensor shapes (``modules.sd.detection``): SD1 UNets get 8
heads by count, CLIP text models ``width / 64`` heads, so the demo file needs no side config.

Why these choices (the calibration run on this kind of machine learnt colour and shape but left position words at
chance, see ``/work/shared/reference/demo-model-calibration.md``):

* **v-prediction** (``v_pred`` marker key in the file, which detection already honours). Where an object sits is
  decided at the highest noise levels. With epsilon prediction the loss there says almost nothing about the clean
  picture (its x0-error weight is SNR, ~0.005 at t=999); the v target weights x0 errors by SNR + 1 >= 1, and the
  sampler's first steps then take the model's picture estimate directly instead of a noise estimate times sigma=14.6.
* **More samples at high noise**: a quarter of the timesteps are drawn from the top 30 % (``high_noise_fraction``)
  and the loss weight is ``(min(SNR, 5) + 1) / (SNR + 1)`` on v — min-SNR's clamp at low noise but full weight at
  high noise (plain min-SNR would scale the high-noise v loss down by SNR again).
* **Steps over width**: cross-attention at 8x8, 4x4 and the middle only. Attention at the full 16x16 latent doubled
  the cost of a training step on this CPU (softmax over 256x256 scores x 8 heads is memory-bound) for a decision —
  which quadrant — that the 4x4 level can make; zero padding gives those features their absolute position. The
  time goes into more steps instead, and each caption is shared by several latents of one batch
  (``UNetSettings.latents_per_caption``), which cuts the text encoder's share of a step by that factor.
* **Position words everywhere in the caption** (several templates, the position first or last) and uniformly drawn
  positions; the causal text encoder then carries the position into the tokens after it, including all padding.

The zero-terminal-SNR schedule was left out on purpose: the loader drives every SD1 file with the standard schedule,
so a model trained on another one would need a special case in the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from modules.sd.text_encoders import CLIPTextConfig
from modules.sd.unet import UNetConfig
from modules.sd.vae import VAEConfig

PREDICTION_TYPES = ("epsilon", "v_prediction")
SD1_LATENT_SCALE = 0.18215


@dataclass(frozen=True)
class DemoModelConfig:
    """The three networks' sizes, the picture size and the training objective of one demo model."""

    image_size: int = 64
    vae: VAEConfig = field(default_factory=lambda: VAEConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1))
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(
        model_channels=64, channel_mult=(1, 2, 2), num_res_blocks=1, transformer_depth=(0, 1, 1),
        transformer_depth_middle=1, context_dim=256, num_heads=8))
    text: CLIPTextConfig = field(default_factory=lambda: CLIPTextConfig(
        hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024))
    prediction_type: str = "v_prediction"

    def __post_init__(self) -> None:
        problems = []
        if self.text.num_heads != max(1, self.text.hidden_size // 64):
            problems.append("the text encoder needs hidden_size / 64 heads (what detection assumes)")
        if self.unet.context_dim != self.text.hidden_size:
            problems.append("the UNet's context_dim must equal the text encoder's hidden_size")
        if self.unet.num_head_channels != -1 or self.unet.num_heads != 8 or self.unet.use_linear_in_transformer:
            problems.append("an SD1 UNet has 8 heads by count and conv projections")
        if self.unet.in_channels != self.vae.embed_dim or self.unet.out_channels != self.vae.embed_dim:
            problems.append("the UNet's in/out channels must equal the VAE's latent channels")
        if self.text.vocab_size != 49408 or self.text.max_positions != 77:
            problems.append("the text encoder must keep CLIP's 49408-token vocabulary and 77 positions")
        if self.vae.scale_factor != SD1_LATENT_SCALE:
            problems.append(f"an SD1 file's latent scale is {SD1_LATENT_SCALE} (whitening adapts the VAE to it)")
        if self.image_size % self.vae.downscale:
            problems.append(f"image_size must be a multiple of the VAE's downscale {self.vae.downscale}")
        if self.prediction_type not in PREDICTION_TYPES:
            problems.append(f"prediction_type must be one of {PREDICTION_TYPES}")
        if problems:
            raise ValueError("Invalid demo model config: " + "; ".join(problems))

    @property
    def latent_size(self) -> int:
        return self.image_size // self.vae.downscale


DEMO = DemoModelConfig()

# For tests: the same layout at toy widths (32-pixel pictures, 16x16 latents), a few hundred thousand parameters
# besides the vocabulary table.
TINY = DemoModelConfig(
    image_size=32,
    vae=VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1),
    unet=UNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, transformer_depth=(1, 1),
                    transformer_depth_middle=1, context_dim=64, num_heads=8),
    text=CLIPTextConfig(hidden_size=64, num_layers=2, num_heads=1, intermediate_size=128),
)


def with_prediction(config: DemoModelConfig, prediction_type: str) -> DemoModelConfig:
    return replace(config, prediction_type=prediction_type)
