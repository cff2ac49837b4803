"""LoRA / LoCon networks in kohya-ss and A1111 conventions: parse a file, map its keys onto our parameters, merge.

Why merge instead of hooking forward: a merged weight costs nothing per step and the generation code stays unaware of
LoRA. The price is that removal must be exact, so the original of every touched parameter is kept (on the CPU) and
copied back — bit-exact, never "subtract the delta again", which drifts in fp16.

Key conventions (each layer is ``<base>.lora_down.weight``, ``<base>.lora_up.weight``, optional ``<base>.alpha``,
``<base>.scale``, ``<base>.lora_mid.weight``):

* UNet, kohya SD1/SD2: diffusers module names, ``lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q``.
* UNet, kohya SDXL: the original LDM names, ``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q``.
  Both are accepted for every family; the diffusers→LDM block mapping is built from the UNet config, not hard-coded.
* Text encoders: ``lora_te_`` (SD1/SD2) or ``lora_te1_``/``lora_te2_`` (SDXL) followed by transformers names such as
  ``text_model_encoder_layers_3_self_attn_q_proj``. On an OpenCLIP tower (SD2 ViT-H, SDXL bigG) q/k/v land on row
  blocks of the packed ``attn.in_proj_weight``, ``out_proj`` on ``attn.out_proj``, ``mlp_fc1``/``fc2`` on
  ``mlp.c_fc``/``mlp.c_proj``.
* diffusers/PEFT files (``unet.<path>.lora_A.weight`` or ``.lora.down.weight``, ``text_encoder[_2].<path>``) are
  renamed to the kohya form first.

The merged change is ``W += m · s · (up @ down)`` with ``s = scale`` if stored, else ``alpha / rank`` (1 without alpha),
``m`` the text-encoder or UNet multiplier. For conv layers the product is over flattened kernels, which is exactly the
composition of a k×k ``down`` conv and a 1×1 ``up`` conv (LoCon); LyCORIS' CP form puts a k×k ``mid`` core between.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.errors import BadCheckpoint
from modules.sd.checkpoint import SafetensorsFile, read_state_dict
from modules.sd.loader import StableDiffusionModel
from modules.sd.text_encoders import OpenCLIPTextEncoder
from modules.sd.unet import UNetConfig, UNetModel

LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt")
STATE_KEY = "lora_merge"
_HASH_BLOCK = 1024 * 1024


class BadLoraFile(BadCheckpoint):
    """A file in the LoRA folder that is not a LoRA we can apply."""


# --- parsing ----------------------------------------------------------------------------------------------------------

_PARTS = {
    "lora_up.weight": "up", "lora_down.weight": "down", "lora_mid.weight": "mid", "alpha": "alpha", "scale": "scale",
    "lora_B.weight": "up", "lora_A.weight": "down", "lora.up.weight": "up", "lora.down.weight": "down",
}
_DIFFUSERS_ROOTS = (("unet.", "lora_unet_"), ("text_encoder.", "lora_te1_"), ("text_encoder_2.", "lora_te2_"))
_DIFFUSERS_SUFFIXES = (".lora.down.weight", ".lora.up.weight", ".lora_A.weight", ".lora_B.weight", ".alpha")
_ATTN_PROCESSOR = re.compile(r"\.processor\.(to_[qkv]|to_out)_lora\.")  # old diffusers attention-processor LoRAs
_LYCORIS_KINDS = (("hada_", "LoHa"), ("lokr_", "LoKr"), ("oft_", "OFT"), ("dora_scale", "DoRA"), ("diff", "full"),
                  ("w_norm", "norm"), ("on_input", "IA3"), ("a1.weight", "GLoRA"))


@dataclass
class LoraLayer:
    """One layer's low-rank change: ``up`` [out, rank(,1,1)], ``down`` [rank, in(, kh, kw)], optional CP ``mid``."""

    key: str
    up: Tensor
    down: Tensor
    mid: Tensor | None = None
    alpha: float | None = None
    scale: float | None = None

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    @property
    def delta_shape(self) -> torch.Size:
        """The shape `delta` returns, known without computing it."""
        if self.mid is not None:
            return torch.Size((self.up.shape[0], self.down.flatten(1).shape[1], *self.mid.shape[2:]))
        return torch.Size((self.up.shape[0], *self.down.shape[1:]))

    def scale_factor(self) -> float:
        """A1111's ``calc_scale``: an explicit ``scale`` wins, else alpha / rank, else 1."""
        if self.scale is not None:
            return self.scale
        if self.alpha is not None:
            return self.alpha / self.rank
        return 1.0

    def delta(self, device: torch.device | str | None = None, dyn_dim: int | None = None) -> Tensor:
        """``scale · up @ down`` in float32: [out, in] for linear layers, [out, in, kh, kw] for conv layers."""
        up = self.up.to(device=device, dtype=torch.float32).flatten(1)
        down = self.down.to(device=device, dtype=torch.float32)
        if self.mid is not None:
            mid = self.mid.to(device=device, dtype=torch.float32)
            product = torch.einsum("nmkl,in,mj->ijkl", mid, up, down.flatten(1))
        else:
            flat_down = down.flatten(1)
            if dyn_dim is not None:  # A1111's dyn_dim: use only the first ranks (scale keeps the full rank)
                up, flat_down = up[:, :dyn_dim], flat_down[:dyn_dim]
            product = up @ flat_down
            if down.dim() == 4:
                product = product.reshape(up.shape[0], *down.shape[1:])
        return product * self.scale_factor()


@dataclass
class LoraNetwork:
    """A parsed LoRA file: usable layers by base key, plus what could not be used and why."""

    layers: dict[str, LoraLayer]
    unsupported: dict[str, str] = field(default_factory=dict)  # base key -> network kind (LoHa, DoRA, ...)
    unknown_keys: list[str] = field(default_factory=list)  # tensors whose names follow no LoRA convention
    ignored_keys: list[str] = field(default_factory=list)  # understood but not LoRA weights (bundled embeddings)
    metadata: dict[str, str] = field(default_factory=dict)


def split_lora_key(key: str) -> tuple[str, str] | None:
    """(base key in kohya form, part name) of one tensor name, or None if it follows no LoRA convention."""
    if key.startswith("lora_"):
        base, _, part = key.partition(".")
        return (base, _PARTS.get(part, part)) if part else None
    key = _ATTN_PROCESSOR.sub(lambda m: "." + m.group(1) + (".0" if m.group(1) == "to_out" else "") + ".lora.", key)
    for root, prefix in _DIFFUSERS_ROOTS:
        if not key.startswith(root):
            continue
        for suffix in _DIFFUSERS_SUFFIXES:
            if key.endswith(suffix):
                path = key[len(root): -len(suffix)]
                return prefix + path.replace(".", "_"), _PARTS[suffix[1:]]
    return None


def _network_kind(parts: Mapping[str, Tensor]) -> str:
    if "up" in parts and "down" in parts and set(parts) <= {"up", "down", "mid", "alpha", "scale"}:
        return "LoRA"
    names = " ".join(parts)
    for marker, kind in _LYCORIS_KINDS:
        if marker in names:
            return kind
    return "incomplete" if set(parts) <= {"up", "down", "mid", "alpha", "scale"} else "unknown"


def _scalar(value: Tensor | None) -> float | None:
    return None if value is None else float(value.reshape(-1)[0].item())


def parse_lora_state_dict(state_dict: Mapping[str, Tensor], name: str = "This file") -> LoraNetwork:
    """Group a LoRA state dict by layer; raise `BadLoraFile` when nothing in it is a LoRA layer we can apply."""
    groups: dict[str, dict[str, Tensor]] = {}
    network = LoraNetwork(layers={})
    for key, value in state_dict.items():
        if key.startswith("bundle_emb."):
            network.ignored_keys.append(key)
            continue
        split = split_lora_key(key)
        if split is None:
            network.unknown_keys.append(key)
            continue
        groups.setdefault(split[0], {})[split[1]] = value
    for base, parts in groups.items():
        kind = _network_kind(parts)
        if kind != "LoRA":
            network.unsupported[base] = kind
            continue
        network.layers[base] = LoraLayer(base, parts["up"], parts["down"], parts.get("mid"),
                                         _scalar(parts.get("alpha")), _scalar(parts.get("scale")))
    if network.layers:
        return network
    if network.unsupported:
        kinds = ", ".join(sorted(set(network.unsupported.values())))
        raise BadLoraFile(f"{name} holds {kinds} layers, which Atelier cannot apply (only LoRA and LoCon).",
                          "Use a LoRA/LoCon version of this network.")
    examples = ", ".join(list(state_dict)[:3]) or "no tensors at all"
    raise BadLoraFile(f"{name} is not a LoRA file: none of its {len(state_dict)} tensors has a LoRA name "
                      f"({examples}).",
                      "LoRA files have keys like lora_unet_….lora_down.weight; checkpoints belong in "
                      "models/Stable-diffusion and embeddings in the embeddings folder.")


def load_lora_file(path: str | os.PathLike[str], *, allow_unsafe: bool = False) -> LoraNetwork:
    """Read and parse a LoRA `.safetensors` (or a pickled `.pt`/`.ckpt` through the restricted unpickler)."""
    path = Path(path)
    metadata: dict[str, str] = {}
    if path.suffix.lower() == ".safetensors":
        with SafetensorsFile(path) as f:
            state_dict = {key: f.read(key) for key in f}
            metadata = dict(f.metadata)
    else:
        state_dict = read_state_dict(path, allow_unsafe=allow_unsafe)
    network = parse_lora_state_dict(state_dict, path.name)
    network.metadata = metadata
    return network


def read_safetensors_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors header (kohya writes ``ss_*`` training facts and ``sshs_*`` hashes)."""
    with SafetensorsFile(path) as f:
        return dict(f.metadata)


def addnet_hash(path: str | os.PathLike[str]) -> str:
    """kohya / sd-webui-additional-networks hash: sha256 of a safetensors file after its 8-byte length and header.

    A1111 writes its first 12 hex digits as "Lora hashes"; metadata edits do not change it.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        f.seek(8 + length)
        for block in iter(lambda: f.read(_HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


# --- where each key goes ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoraTarget:
    """A weight a LoRA layer changes: the model part, the parameter name in it, and rows of a packed q/k/v matrix."""

    component: str  # "unet" or a text-encoder name ("clip_l", "open_clip_h", "open_clip_g")
    param: str
    rows: tuple[int, int] | None = None

    @property
    def is_text_encoder(self) -> bool:
        return self.component != "unet"


_RESNET_PARTS = {"in_layers.2": "conv1", "out_layers.3": "conv2", "emb_layers.1": "time_emb_proj",
                 "skip_connection": "conv_shortcut"}


def diffusers_block_names(config: UNetConfig) -> dict[str, str]:
    """LDM module prefix -> diffusers module prefix for a UNet of this config (the blocks, not their insides)."""
    names = {"input_blocks.0.0": "conv_in", "time_embed.0": "time_embedding.linear_1",
             "time_embed.2": "time_embedding.linear_2", "label_emb.0.0": "add_embedding.linear_1",
             "label_emb.0.2": "add_embedding.linear_2", "out.2": "conv_out"}
    levels, per_level = len(config.channel_mult), config.num_res_blocks
    block = 1
    for level in range(levels):
        for j in range(per_level):
            names[f"input_blocks.{block}.0"] = f"down_blocks.{level}.resnets.{j}"
            if config.transformer_depth[level] > 0:
                names[f"input_blocks.{block}.1"] = f"down_blocks.{level}.attentions.{j}"
            block += 1
        if level != levels - 1:
            names[f"input_blocks.{block}.0.op"] = f"down_blocks.{level}.downsamplers.0.conv"
            block += 1
    names["middle_block.0"] = "mid_block.resnets.0"
    if config.transformer_depth_middle >= 0:
        names["middle_block.1"] = "mid_block.attentions.0"
        names["middle_block.2"] = "mid_block.resnets.1"
    block = 0
    for up, level in enumerate(reversed(range(levels))):
        has_attention = config.transformer_depth[level] > 0
        for j in range(per_level + 1):
            names[f"output_blocks.{block}.0"] = f"up_blocks.{up}.resnets.{j}"
            if has_attention:
                names[f"output_blocks.{block}.1"] = f"up_blocks.{up}.attentions.{j}"
            if level and j == per_level:
                names[f"output_blocks.{block}.{2 if has_attention else 1}.conv"] = f"up_blocks.{up}.upsamplers.0.conv"
            block += 1
    return names


def diffusers_module_name(ldm_name: str, block_names: Mapping[str, str]) -> str | None:
    """Diffusers name of an LDM UNet module: ``input_blocks.1.0.in_layers.2`` -> ``down_blocks.0.resnets.0.conv1``."""
    parts = ldm_name.split(".")
    for length in (4, 3, 2):
        prefix = ".".join(parts[:length])
        if prefix not in block_names:
            continue
        new, rest = block_names[prefix], ".".join(parts[length:])
        if not rest:
            return new
        if ".resnets." in new:
            rest = _RESNET_PARTS.get(rest)
            if rest is None:
                return None
        return f"{new}.{rest}"
    return None


def _unet_targets(unet: UNetModel) -> dict[str, LoraTarget]:
    block_names = diffusers_block_names(unet.config)
    targets: dict[str, LoraTarget] = {}
    for name, module in unet.named_modules():
        if not isinstance(module, nn.Linear | nn.Conv2d):
            continue
        target = LoraTarget("unet", name + ".weight")
        targets["lora_unet_" + name.replace(".", "_")] = target
        diffusers = diffusers_module_name(name, block_names)
        if diffusers is not None:
            targets["lora_unet_" + diffusers.replace(".", "_")] = target
    return targets


def _open_clip_targets(component: str, encoder: OpenCLIPTextEncoder, prefixes: Sequence[str]) -> dict[str, LoraTarget]:
    width = encoder.config.width
    targets: dict[str, LoraTarget] = {}
    for name, module in encoder.named_modules():  # A1111-style names of the OpenCLIP modules themselves
        if isinstance(module, nn.Linear):
            for prefix in prefixes:
                targets[prefix + name.replace(".", "_")] = LoraTarget(component, name + ".weight")
    for i in range(encoder.config.layers):
        block = f"model.transformer.resblocks.{i}."
        packed = block + "attn.in_proj_weight"
        layer_targets = {
            "self_attn_q_proj": LoraTarget(component, packed, (0, width)),
            "self_attn_k_proj": LoraTarget(component, packed, (width, 2 * width)),
            "self_attn_v_proj": LoraTarget(component, packed, (2 * width, 3 * width)),
            "self_attn_out_proj": LoraTarget(component, block + "attn.out_proj.weight"),
            "mlp_fc1": LoraTarget(component, block + "mlp.c_fc.weight"),
            "mlp_fc2": LoraTarget(component, block + "mlp.c_proj.weight"),
        }
        for prefix in prefixes:
            for suffix, target in layer_targets.items():
                targets[f"{prefix}text_model_encoder_layers_{i}_{suffix}"] = target
    return targets


def _clip_targets(component: str, encoder: nn.Module, prefixes: Sequence[str]) -> dict[str, LoraTarget]:
    targets: dict[str, LoraTarget] = {}
    for name, module in encoder.named_modules():
        if isinstance(module, nn.Linear) and name.startswith("transformer."):
            for prefix in prefixes:
                targets[prefix + name[len("transformer."):].replace(".", "_")] = LoraTarget(component, name + ".weight")
    return targets


def text_encoder_prefixes(names: Sequence[str]) -> list[tuple[str, ...]]:
    """kohya prefixes per text encoder: one encoder takes ``lora_te_`` (and ``lora_te1_``); SDXL ``te1``/``te2``."""
    if len(names) == 1:
        return [("lora_te_", "lora_te1_", "lora_te2_") if names[0] == "open_clip_g" else ("lora_te_", "lora_te1_")]
    return [(f"lora_te{i + 1}_",) for i in range(len(names))]


def lora_targets(model: StableDiffusionModel) -> dict[str, LoraTarget]:
    """Every kohya/A1111 base key this model understands, mapped to the weight it changes."""
    targets = _unet_targets(model.unet)
    names = list(model.text_encoders)
    for name, prefixes in zip(names, text_encoder_prefixes(names), strict=True):
        encoder = model.text_encoders[name]
        if isinstance(encoder, OpenCLIPTextEncoder):
            targets.update(_open_clip_targets(name, encoder, prefixes))
        else:
            targets.update(_clip_targets(name, encoder, prefixes))
    return targets


# --- merging ----------------------------------------------------------------------------------------------------------


@dataclass
class LoraApplication:
    """One network to merge, with A1111's separate text-encoder and UNet multipliers."""

    network: LoraNetwork
    te_multiplier: float = 1.0
    unet_multiplier: float = 1.0
    dyn_dim: int | None = None
    label: str = ""


@dataclass
class ApplyReport:
    """What merging one network did: layers applied, and keys left out (never fatal)."""

    label: str
    applied: int = 0
    unmatched: list[str] = field(default_factory=list)  # base keys naming no layer of this model
    mismatched: list[str] = field(default_factory=list)  # shape does not fit (LoRA made for another model family)
    unsupported: dict[str, str] = field(default_factory=dict)

    @property
    def skipped(self) -> int:
        return len(self.unmatched) + len(self.mismatched) + len(self.unsupported)

    def summary(self) -> str:
        text = f"{self.label or 'LoRA'}: {self.applied} layers applied"
        if self.skipped:
            text += (f", {len(self.unmatched)} unmatched, {len(self.mismatched)} of the wrong shape, "
                     f"{len(self.unsupported)} unsupported")
        return text


@dataclass
class MergeState:
    """Originals of the parameters a merge changed (CPU copies), and what is merged now."""

    backups: dict[tuple[str, str], Tensor] = field(default_factory=dict)
    signature: object = None  # the caller's description of what is merged, to skip identical re-merges
    reports: list[ApplyReport] | None = None
    targets: dict[str, LoraTarget] | None = None


def merge_state(model: StableDiffusionModel) -> MergeState:
    state = model.extras.get(STATE_KEY)
    if not isinstance(state, MergeState):
        state = MergeState()
        model.extras[STATE_KEY] = state
    return state


def _parameter(model: StableDiffusionModel, component: str, param: str) -> nn.Parameter:
    module = model.unet if component == "unet" else model.text_encoders[component]
    return module.get_parameter(param)


def _fit(delta: Tensor, shape: torch.Size) -> Tensor | None:
    """The delta in the weight's shape (1x1 conv <-> linear by reshape; a 4-channel conv_in padded to 9), or None."""
    if delta.shape == shape:
        return delta
    if delta.shape[0] == shape[0] and delta.numel() == shape.numel():  # same outputs, inputs flattened alike
        return delta.reshape(shape)
    if delta.dim() == 4 and len(shape) == 4 and delta.shape[1] < shape[1] and delta.shape[0] == shape[0] \
            and delta.shape[2:] == shape[2:]:  # inpainting UNet: extra input channels get no change
        return F.pad(delta, (0, 0, 0, 0, 0, shape[1] - delta.shape[1]))
    return None


def merge_loras(model: StableDiffusionModel, applications: Sequence[LoraApplication],
                signature: object = None) -> list[ApplyReport]:
    """Make the model's weights = originals + the given networks (earlier merges are undone first, bit-exactly).

    One parameter is handled at a time, so the extra memory is one float32 copy of the largest weight.
    """
    restore_weights(model)
    state = merge_state(model)
    if state.targets is None:
        state.targets = lora_targets(model)
    planned: dict[tuple[str, str], list[tuple[LoraLayer, LoraTarget, float, int | None]]] = {}
    reports = []
    for app in applications:
        report = ApplyReport(app.label, unsupported=dict(app.network.unsupported))
        for base, layer in app.network.layers.items():
            target = state.targets.get(base)
            if target is None:
                report.unmatched.append(base)
                continue
            param = _parameter(model, target.component, target.param)
            shape = param.shape if target.rows is None else torch.Size((target.rows[1] - target.rows[0],
                                                                        *param.shape[1:]))
            if _fit(torch.empty(layer.delta_shape, device="meta"), shape) is None:
                report.mismatched.append(f"{base}: {tuple(layer.delta_shape)} vs {tuple(shape)}")
                continue
            multiplier = app.te_multiplier if target.is_text_encoder else app.unet_multiplier
            report.applied += 1
            if multiplier != 0:
                planned.setdefault((target.component, target.param), []).append(
                    (layer, target, multiplier, app.dyn_dim))
        reports.append(report)
    for key, items in planned.items():
        _merge_one(model, state, key, items)
    state.signature, state.reports = signature, reports
    return reports


def _merge_one(model: StableDiffusionModel, state: MergeState, key: tuple[str, str],
               items: list[tuple[LoraLayer, LoraTarget, float, int | None]]) -> None:
    param = _parameter(model, *key)
    total = torch.zeros(param.shape, dtype=torch.float32, device=param.device)
    for layer, target, multiplier, dyn_dim in items:
        region = total if target.rows is None else total[target.rows[0]: target.rows[1]]
        delta = _fit(layer.delta(param.device, dyn_dim), region.shape)
        assert delta is not None, "shapes were checked when planning"
        region.add_(delta, alpha=multiplier)
    with torch.no_grad():
        state.backups[key] = param.detach().to("cpu", copy=True)
        param.copy_((param.float() + total).to(param.dtype))


def restore_weights(model: StableDiffusionModel) -> int:
    """Put back the original of every parameter a merge changed; returns how many were restored."""
    state = merge_state(model)
    with torch.no_grad():
        for (component, name), original in state.backups.items():
            _parameter(model, component, name).copy_(original)
    count = len(state.backups)
    state.backups.clear()
    state.signature, state.reports = None, None
    return count
