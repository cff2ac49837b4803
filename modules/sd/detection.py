"""Model detection as data: read a state dict's keys and shapes, return a plain `ModelConfig`.

Every size (channels, multipliers, res blocks, per-level transformer depth, context width, heads, latent channels,
text-encoder widths and depths) is read from the weights, so the small demo model and a full SDXL checkpoint go
through the same code. What the weights cannot tell — the head count of SD1 (8 heads) versus the head width of
SD2/SDXL (64), and SD2's epsilon versus v-prediction — follows the original configs; v-prediction of SD2 models is
settled after loading by `prediction_probe` (A1111's test), and a `<stem>.yaml` / `<stem>.json` beside the file may
override anything.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from torch import Tensor

from modules.errors import BadCheckpoint
from modules.sd.text_encoders import CLIPTextConfig, OpenCLIPTextConfig
from modules.sd.unet import UNetConfig
from modules.sd.vae import VAEConfig

Family = Literal["sd1", "sd2", "sdxl", "sdxl_refiner"]
PredictionType = Literal["epsilon", "v_prediction"]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD_LATENT_SCALE = 0.18215
SDXL_LATENT_SCALE = 0.13025


@dataclass(frozen=True)
class TextEncoderSpec:
    """One text encoder in a checkpoint: its role, the key prefix its weights live under, and its sizes."""

    name: Literal["clip_l", "open_clip_h", "open_clip_g"]
    prefix: str
    config: CLIPTextConfig | OpenCLIPTextConfig


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build a Stable Diffusion model from a checkpoint."""

    family: Family
    unet: UNetConfig
    vae: VAEConfig
    text_encoders: tuple[TextEncoderSpec, ...]
    prediction_type: PredictionType
    prediction_type_certain: bool  # False: SD2 guess, to be settled by the probe after loading

    @property
    def is_inpainting(self) -> bool:
        return self.unet.in_channels == 9

    @property
    def latent_channels(self) -> int:
        return self.unet.out_channels


LEGACY_CLIP_KEY = re.compile(r"^cond_stage_model\.transformer\.(embeddings|encoder|final_layer_norm)\.")
SGM_FIRST_EMBEDDER = "conditioner.embedders.0."


def normalize_key(key: str, sgm_sd2: bool) -> str | None:
    """A key after A1111's legacy fix-ups (old SD1 text-encoder names, SD2.1-Turbo's SGM prefix); None: drop (EMA)."""
    if key.startswith("model_ema."):
        return None
    key = LEGACY_CLIP_KEY.sub(r"cond_stage_model.transformer.text_model.\1.", key)
    if sgm_sd2 and key.startswith(SGM_FIRST_EMBEDDER):
        key = "cond_stage_model." + key[len(SGM_FIRST_EMBEDDER):]
    return key


def normalize_keys(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The state dict with `normalize_key` applied to every key."""
    sgm_sd2 = is_sgm_sd2(state_dict)
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        new = normalize_key(key, sgm_sd2)
        if new is not None:
            out[new] = value
    return out


def is_sgm_sd2(state_dict: Mapping[str, Tensor]) -> bool:
    ln = state_dict.get("conditioner.embedders.0.model.ln_final.weight")
    return ln is not None and ln.shape[0] == 1024 and "conditioner.embedders.1.model.ln_final.weight" not in state_dict


def _count(keys: list[str], pattern: str) -> int:
    """Number of distinct integers N matching `pattern` (a regex with one `(\\d+)` group) in `keys`."""
    rx = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := rx.match(k))})


def require_unet(sd: Mapping[str, Tensor], prefix: str = UNET_PREFIX) -> None:
    """Explain what the file is when it has no UNet, instead of failing on a missing key later."""
    if prefix + "input_blocks.0.0.weight" in sd:
        return
    if any(k.startswith(("down_blocks.", "unet.down_blocks.")) for k in sd):
        raise BadCheckpoint("This is a diffusers-format model, not a single-file checkpoint.",
                            "Use the single-file .safetensors release of the model.")
    raise BadCheckpoint("No UNet weights found (model.diffusion_model.*): this is not a Stable Diffusion "
                        "checkpoint, or it is a VAE/LoRA/embedding file placed in the checkpoint folder.")


def detect_unet(sd: Mapping[str, Tensor], prefix: str = UNET_PREFIX, *, heads_by_count: bool = True) -> UNetConfig:
    """UNet sizes from the weights under `prefix`.

    Head layout is not in the weights: SD1 uses 8 heads whatever the width (`heads_by_count`), SD2/SDXL 64-wide heads.
    """
    require_unet(sd, prefix)
    keys = [k[len(prefix):] for k in sd if k.startswith(prefix)]
    conv_in = sd[prefix + "input_blocks.0.0.weight"]
    model_channels, in_channels = conv_in.shape[0], conv_in.shape[1]
    out_channels = sd[prefix + "out.2.weight"].shape[0]

    channel_mult: list[int] = []
    depths: list[int] = []
    res_blocks_per_level: list[int] = []
    block = 1
    while f"input_blocks.{block}.0.op.weight" in keys or f"input_blocks.{block}.0.in_layers.0.weight" in keys:
        if f"input_blocks.{block}.0.op.weight" in keys:  # a Downsample ends the level
            block += 1
            continue
        out_ch = sd[f"{prefix}input_blocks.{block}.0.out_layers.3.weight"].shape[0]
        depth = _count(keys, rf"^input_blocks\.{block}\.1\.transformer_blocks\.(\d+)\.")
        if not channel_mult or f"input_blocks.{block - 1}.0.op.weight" in keys:
            channel_mult.append(out_ch // model_channels)
            depths.append(depth)
            res_blocks_per_level.append(0)
        res_blocks_per_level[-1] += 1
        block += 1
    if len(set(res_blocks_per_level)) != 1:
        raise BadCheckpoint(f"Unsupported UNet layout: levels have {res_blocks_per_level} res blocks.")

    if "middle_block.1.in_layers.0.weight" in keys and "middle_block.2.in_layers.0.weight" not in keys:
        depth_middle = -1
    else:
        depth_middle = _count(keys, r"^middle_block\.1\.transformer_blocks\.(\d+)\.")
    attn_keys = [k for k in keys if k.endswith("attn2.to_k.weight")]
    context_dim = sd[prefix + attn_keys[0]].shape[1] if attn_keys else 768
    proj_in = [k for k in keys if k.endswith(".proj_in.weight")]
    use_linear = bool(proj_in) and sd[prefix + proj_in[0]].ndim == 2
    adm = sd.get(prefix + "label_emb.0.0.weight")
    return UNetConfig(
        in_channels=in_channels,
        out_channels=out_channels,
        model_channels=model_channels,
        channel_mult=tuple(channel_mult),
        num_res_blocks=res_blocks_per_level[0],
        transformer_depth=tuple(depths),
        transformer_depth_middle=depth_middle,
        context_dim=context_dim,
        num_heads=8,  # ignored when num_head_channels is set
        num_head_channels=-1 if heads_by_count else 64,
        use_linear_in_transformer=use_linear,
        adm_in_channels=adm.shape[1] if adm is not None else None,
    )


def detect_vae(sd: Mapping[str, Tensor], scale_factor: float, prefix: str = VAE_PREFIX) -> VAEConfig:
    """VAE sizes from the weights under `prefix`."""
    conv_in = sd.get(prefix + "encoder.conv_in.weight")
    if conv_in is None:
        raise BadCheckpoint("No VAE weights found (first_stage_model.*) in this checkpoint.",
                            "Bake a VAE into the checkpoint, or use a checkpoint that includes one.")
    keys = [k[len(prefix):] for k in sd if k.startswith(prefix)]
    ch = conv_in.shape[0]
    levels = _count(keys, r"^encoder\.down\.(\d+)\.")
    mult = tuple(sd[f"{prefix}encoder.down.{i}.block.0.conv2.weight"].shape[0] // ch for i in range(levels))
    return VAEConfig(
        in_channels=conv_in.shape[1],
        out_channels=sd[prefix + "decoder.conv_out.weight"].shape[0],
        ch=ch,
        ch_mult=mult,
        num_res_blocks=_count(keys, r"^encoder\.down\.0\.block\.(\d+)\."),
        z_channels=sd[prefix + "encoder.conv_out.weight"].shape[0] // 2,
        embed_dim=sd[prefix + "quant_conv.weight"].shape[0] // 2,
        scale_factor=scale_factor,
    )


def detect_clip(sd: Mapping[str, Tensor], prefix: str) -> CLIPTextConfig:
    """HF-layout CLIP text model sizes (`<prefix>transformer.text_model.*`)."""
    base = prefix + "transformer.text_model."
    tokens = sd[base + "embeddings.token_embedding.weight"]
    keys = [k for k in sd if k.startswith(base)]
    hidden = tokens.shape[1]
    return CLIPTextConfig(
        vocab_size=tokens.shape[0],
        hidden_size=hidden,
        num_layers=_count(keys, re.escape(base) + r"encoder\.layers\.(\d+)\."),
        num_heads=max(1, hidden // 64),
        intermediate_size=sd[base + "encoder.layers.0.mlp.fc1.weight"].shape[0],
        max_positions=sd[base + "embeddings.position_embedding.weight"].shape[0],
    )


def detect_open_clip(sd: Mapping[str, Tensor], prefix: str) -> OpenCLIPTextConfig:
    """OpenCLIP text tower sizes (`<prefix>model.*`)."""
    base = prefix + "model."
    tokens = sd[base + "token_embedding.weight"]
    keys = [k for k in sd if k.startswith(base + "transformer.")]
    width = tokens.shape[1]
    projection = sd.get(base + "text_projection")
    return OpenCLIPTextConfig(
        vocab_size=tokens.shape[0],
        width=width,
        layers=_count(keys, re.escape(base) + r"transformer\.resblocks\.(\d+)\."),
        heads=max(1, width // 64),
        context_length=sd[base + "positional_embedding"].shape[0],
        projection_dim=projection.shape[1] if projection is not None else None,
    )


def detect(state_dict: Mapping[str, Tensor]) -> ModelConfig:
    """The family and every size of a (key-normalised) single-file checkpoint."""
    sd = state_dict
    if "model.diffusion_model.x_embedder.proj.weight" in sd:
        raise BadCheckpoint("SD3/MMDiT checkpoints are not supported yet.", "Use an SD1.x, SD2.x or SDXL checkpoint.")
    require_unet(sd)
    if "conditioner.embedders.1.model.ln_final.weight" in sd:
        family: Family = "sdxl"
        encoders = (
            TextEncoderSpec("clip_l", "conditioner.embedders.0.", detect_clip(sd, "conditioner.embedders.0.")),
            TextEncoderSpec("open_clip_g", "conditioner.embedders.1.",
                            detect_open_clip(sd, "conditioner.embedders.1.")),
        )
    elif "conditioner.embedders.0.model.ln_final.weight" in sd:
        family = "sdxl_refiner"
        encoders = (TextEncoderSpec("open_clip_g", "conditioner.embedders.0.",
                                    detect_open_clip(sd, "conditioner.embedders.0.")),)
    elif "cond_stage_model.model.token_embedding.weight" in sd:
        family = "sd2"
        encoders = (TextEncoderSpec("open_clip_h", "cond_stage_model.", detect_open_clip(sd, "cond_stage_model.")),)
    elif "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight" in sd:
        family = "sd1"
        encoders = (TextEncoderSpec("clip_l", "cond_stage_model.", detect_clip(sd, "cond_stage_model.")),)
    else:
        raise BadCheckpoint("No text encoder weights found in this checkpoint (cond_stage_model.* / conditioner.*).",
                            "Use a complete single-file checkpoint.")
    unet = detect_unet(sd, heads_by_count=family == "sd1")
    scale = SDXL_LATENT_SCALE if family.startswith("sdxl") else SD_LATENT_SCALE
    v_flag = "v_pred" in sd
    return ModelConfig(
        family=family,
        unet=unet,
        vae=detect_vae(sd, scale),
        text_encoders=encoders,
        prediction_type="v_prediction" if v_flag else "epsilon",
        prediction_type_certain=family != "sd2" or v_flag or unet.in_channels == 9,
    )


def apply_override_file(config: ModelConfig, checkpoint_path: Path) -> ModelConfig:
    """Apply `<stem>.yaml` (an LDM/SGM config) or `<stem>.json` (our keys) found beside the checkpoint."""
    yaml_path, json_path = checkpoint_path.with_suffix(".yaml"), checkpoint_path.with_suffix(".json")
    if yaml_path.is_file():
        return _apply_ldm_yaml(config, yaml_path)
    if json_path.is_file():
        try:
            data = json.loads(json_path.read_text(encoding="utf8"))
        except ValueError as e:
            raise BadCheckpoint(f"{json_path.name} (beside the checkpoint) is not valid JSON: {e}") from e
        return _apply_overrides(config, data.get("prediction_type"), data.get("scale_factor"), data.get("unet", {}))
    return config


def _apply_ldm_yaml(config: ModelConfig, path: Path) -> ModelConfig:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf8")) or {}
        params = data.get("model", {}).get("params", {})
    except (yaml.YAMLError, AttributeError) as e:
        raise BadCheckpoint(f"{path.name} (beside the checkpoint) is not a valid model config: {e}") from e
    prediction = {"v": "v_prediction", "eps": "epsilon"}.get(params.get("parameterization", ""))
    unet_params = (params.get("unet_config") or params.get("network_config") or {}).get("params", {})
    return _apply_overrides(config, prediction, params.get("scale_factor"), unet_params)


UNET_OVERRIDE_FIELDS = ("num_heads", "num_head_channels", "context_dim", "use_linear_in_transformer")


def _apply_overrides(config: ModelConfig, prediction: str | None, scale: float | None,
                     unet_params: Mapping[str, object]) -> ModelConfig:
    if prediction not in (None, "epsilon", "v_prediction"):
        raise BadCheckpoint(f"Unknown prediction type {prediction!r} in the model config override.")
    unet = replace(config.unet, **{k: unet_params[k] for k in UNET_OVERRIDE_FIELDS if k in unet_params})
    vae = replace(config.vae, scale_factor=float(scale)) if scale else config.vae
    if prediction is None:
        return replace(config, unet=unet, vae=vae)
    return replace(config, unet=unet, vae=vae, prediction_type=prediction, prediction_type_certain=True)
