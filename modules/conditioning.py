"""Prompt texts → the UNet's text conditioning for every family, with A1111's chunking, emphasis and clip skip.

`TextConditioner(model, options).get_learned_conditioning(texts)` is what A1111 calls
`sd_model.get_learned_conditioning`, so `modules.prompt_parser.get_learned_conditioning(conditioner, prompts, steps)`
works with it as the `model`. Per family (A1111 `sd_hijack_clip`, `sd_hijack_open_clip`, `sd_models_xl`):

* SD1: CLIP-L, `hidden_states[-clip_skip]` then the final norm → tensor [B, 77k, 768].
* SD2: OpenCLIP-H penultimate layer + final norm, clip skip ignored (as A1111), 0-padding → [B, 77k, 1024].
* SDXL: CLIP-L penultimate (no norm; clip skip only with `sdxl_clip_l_skip`) ‖ bigG penultimate (no norm, 0-padding)
  → `{"crossattn": [B, 77k, 2048], "vector": [B, 2816]}`; the vector is bigG's pooled output of the *first* chunk
  followed by sinusoids of (height, width, crop top, crop left, height, width).
* SDXL refiner: bigG only → `{"crossattn": [B, 77k, 1280], "vector": [B, 2560]}` with the aesthetic score (6.0 for
  prompts, 2.5 for negative prompts) in place of the target size.

Each text is tokenised once (`conditioning_chunks`); every encoder gets the same ids with its own padding rule. Each
77-token chunk is encoded on its own, emphasis weights multiply its token vectors ("Original" then rescales the chunk
to its pre-weighting mean) and the chunks are concatenated. In a batch, shorter texts are padded with encodings of the
empty prompt, as A1111 does. An SDXL negative batch made only of empty prompts gets zero text conditioning (sgm's
`force_zero_embeddings`).

Deviation: A1111 computes the "Original" mean over the whole batch of i-th chunks, which makes a text's cond depend on
what it is batched with; here it is per chunk, so conds can be cached per text (A1111's `persistent_cond_cache` idea):
the cache key is (text, options that change the encoding, `cache_salt`, the embedding lookup's `cache_key`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from modules.conditioning_chunks import (
    EmbeddingLookup,
    PromptChunk,
    count_tokens,
    pad_after_first_end,
    tokenize_prompt,
)
from modules.sd.tokenizer import CLIPTokenizer, get_clip_tokenizer
from modules.sd.unet import sdxl_adm_vector

__all__ = [
    "ConditioningOptions",
    "EncoderPlan",
    "TextConditioner",
    "apply_emphasis",
    "emphasis_infotext",
    "encoder_plans",
]

SDXL_FAMILIES = ("sdxl", "sdxl_refiner")


@dataclass(frozen=True)
class ConditioningOptions:
    """The settings that shape text conditioning, named after their A1111 options in the comments."""

    emphasis: str = "Original"  # emphasis
    clip_skip: int = 1  # CLIP_stop_at_last_layers
    comma_padding_backtrack: int = 20  # comma_padding_backtrack
    sdxl_clip_l_skip: bool = False  # sdxl_clip_l_skip
    sdxl_crop_top: int = 0  # sdxl_crop_top
    sdxl_crop_left: int = 0  # sdxl_crop_left
    refiner_high_aesthetic_score: float = 6.0  # sdxl_refiner_high_aesthetic_score
    refiner_low_aesthetic_score: float = 2.5  # sdxl_refiner_low_aesthetic_score

    @classmethod
    def from_opts(cls, opts: Any) -> ConditioningOptions:
        """Read A1111-named attributes from an options object; missing ones keep their defaults."""
        names = {
            "emphasis": "emphasis",
            "clip_skip": "CLIP_stop_at_last_layers",
            "comma_padding_backtrack": "comma_padding_backtrack",
            "sdxl_clip_l_skip": "sdxl_clip_l_skip",
            "sdxl_crop_top": "sdxl_crop_top",
            "sdxl_crop_left": "sdxl_crop_left",
            "refiner_high_aesthetic_score": "sdxl_refiner_high_aesthetic_score",
            "refiner_low_aesthetic_score": "sdxl_refiner_low_aesthetic_score",
        }
        defaults = cls()
        return cls(**{field: getattr(opts, name, getattr(defaults, field)) for field, name in names.items()})

    def encoding_key(self) -> tuple:
        """The options that change a text's encoding (sizes and crops only change the SDXL vector)."""
        return self.emphasis, self.clip_skip, self.comma_padding_backtrack, self.sdxl_clip_l_skip


@dataclass(frozen=True)
class EncoderPlan:
    """How one text encoder of a family is run: layer, norm, padding id, and whether its pooled output is used."""

    name: str  # key in model.text_encoders
    skip_last_layers: int
    apply_final_norm: bool
    pad_id: int
    embedding_key: str  # key of this encoder's part in SDXL embedding files
    pooled: bool = False


def _clip_skip_layers(clip_skip: int, encoder: nn.Module) -> int:
    """A1111's `hidden_states[-N]` as a count of skipped layers, kept inside the encoder's depth."""
    return min(max(clip_skip, 1) - 1, encoder.num_layers - 1)


def encoder_plans(family: str, options: ConditioningOptions, encoders: Mapping[str, nn.Module],
                  eos_id: int) -> list[EncoderPlan]:
    """The encoders a family conditions on, in the order their features are concatenated."""
    if family == "sd1":
        skip = _clip_skip_layers(options.clip_skip, encoders["clip_l"])
        return [EncoderPlan("clip_l", skip, True, eos_id, "clip_l")]
    if family == "sd2":
        return [EncoderPlan("open_clip_h", 1, True, 0, "clip_h")]
    big_g = EncoderPlan("open_clip_g", 1, False, 0, "clip_g", pooled=True)
    if family == "sdxl_refiner":
        return [big_g]
    if family == "sdxl":
        skip = _clip_skip_layers(options.clip_skip, encoders["clip_l"]) if options.sdxl_clip_l_skip else 1
        return [EncoderPlan("clip_l", skip, False, eos_id, "clip_l"), big_g]
    raise ValueError(f"no text conditioning for model family {family!r}")


def apply_emphasis(z: Tensor, multipliers: Tensor, emphasis: str) -> Tensor:
    """Weight token vectors z [k, 77, C] by multipliers [k, 77].

    "Original" (and, like A1111, any unknown name) rescales each chunk to its unweighted mean so that weights shift
    attention between tokens rather than the overall magnitude; "No norm" only multiplies; "Ignore"/"None" do nothing.
    """
    if emphasis in ("None", "Ignore"):
        return z
    weighted = z.float() * multipliers.to(device=z.device, dtype=torch.float32)[..., None]
    if emphasis != "No norm":
        original_mean = z.float().mean(dim=(1, 2), keepdim=True)
        new_mean = weighted.mean(dim=(1, 2), keepdim=True)
        # A chunk whose weighted mean is exactly 0 (an untrained encoder) keeps its values instead of becoming NaN.
        weighted = weighted * torch.where(new_mean != 0, original_mean / new_mean, torch.ones_like(new_mean))
    return weighted.to(z.dtype)


def emphasis_infotext(texts: Sequence[str], emphasis: str) -> str | None:
    """A1111 writes `Emphasis: <mode>` into infotext only when a prompt has brackets and the mode is not Original."""
    if emphasis != "Original" and any("(" in text or "[" in text for text in texts):
        return emphasis
    return None


def embedding_vectors(embedding: Any, key: str, width: int) -> Tensor:
    """The rows of a textual-inversion embedding meant for one encoder (SDXL files hold one tensor per encoder)."""
    vectors = embedding.vectors
    name = getattr(embedding, "name", "?")
    if isinstance(vectors, Mapping):
        if key not in vectors:
            raise ValueError(f"embedding {name!r} has no {key!r} vectors (it has {sorted(vectors)})")
        vectors = vectors[key]
    if vectors.shape[-1] != width:
        raise ValueError(f"embedding {name!r} has {vectors.shape[-1]}-wide vectors; this text encoder needs {width}")
    return vectors


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _apply_fixes(embeds: Tensor, chunks: Sequence[PromptChunk], key: str) -> None:
    """Overwrite token-embedding rows offset+1.. (after BOS) with embedding vectors, in place."""
    for row, chunk in enumerate(chunks):
        for fix in chunk.fixes:
            vectors = embedding_vectors(fix.embedding, key, embeds.shape[-1]).to(embeds)
            count = min(vectors.shape[0], embeds.shape[1] - fix.offset - 1)
            embeds[row, fix.offset + 1 : fix.offset + 1 + count] = vectors[:count]


def encode_chunks(encoder: nn.Module, plan: EncoderPlan, chunks: Sequence[PromptChunk], eos_id: int,
                  emphasis: str) -> tuple[Tensor, Tensor | None]:
    """Encode chunks as one batch: hidden [k, 77, C] with emphasis applied, and pooled [k, P] if the plan uses it."""
    device = _device_of(encoder)
    tokens = torch.tensor([pad_after_first_end(c.tokens, eos_id, plan.pad_id) for c in chunks], device=device)
    embeds = None
    if any(chunk.fixes for chunk in chunks):
        embeds = encoder.embed_tokens(tokens)
        _apply_fixes(embeds, chunks, plan.embedding_key)
    out = encoder(tokens, skip_last_layers=plan.skip_last_layers, apply_final_norm=plan.apply_final_norm,
                  need_pooled=plan.pooled, input_embeds=embeds)
    multipliers = torch.tensor([c.multipliers for c in chunks], device=device)
    return apply_emphasis(out.hidden, multipliers, emphasis), out.pooled


@dataclass
class _Encoded:
    """One text's conditioning: crossattn [77k, C], pooled [P] of its first chunk (SDXL) and embeddings it used."""

    crossattn: Tensor
    pooled: Tensor | None
    embeddings: dict[str, Any]


class TextConditioner:
    """A model's text side: prompts in, conditioning out, with a per-text cache reused across steps and batches.

    `embedding_lookup` (textual inversion) and `cache_salt` (e.g. the active LoRA set, which changes the text
    encoder's weights) may be reassigned at any time; both are part of the cache key. `used_embeddings` collects the
    embeddings that encoded texts used (for infotext hashes); the caller clears it per job.
    """

    def __init__(self, model: Any, options: ConditioningOptions | None = None, *,
                 tokenizer: CLIPTokenizer | None = None, embedding_lookup: EmbeddingLookup | None = None,
                 cache_size: int = 64) -> None:
        self.family: str = getattr(model, "family", None) or model.config.family
        self.text_encoders: Mapping[str, nn.Module] = model.text_encoders
        self.options = options or ConditioningOptions()
        self.tokenizer = tokenizer or get_clip_tokenizer()
        self.embedding_lookup = embedding_lookup
        self.cache_salt: Hashable = None
        self.cache_size = cache_size
        self.used_embeddings: dict[str, Any] = {}
        self._cache: OrderedDict[tuple, _Encoded] = OrderedDict()

    @property
    def is_sdxl(self) -> bool:
        return self.family in SDXL_FAMILIES

    def plans(self) -> list[EncoderPlan]:
        return encoder_plans(self.family, self.options, self.text_encoders, self.tokenizer.eos_token_id)

    def tokenize(self, text: str) -> tuple[list[PromptChunk], int]:
        """Chunks and token count of one prompt under the current options."""
        return tokenize_prompt(text, self.tokenizer, emphasis=self.options.emphasis,
                               comma_padding_backtrack=self.options.comma_padding_backtrack,
                               embedding_lookup=self.embedding_lookup)

    def count_tokens(self, text: str, steps: int = 20, *, is_positive: bool = True) -> tuple[int, int]:
        """(tokens, room) for the UI counter; see `conditioning_chunks.count_tokens`."""
        return count_tokens(text, steps, is_positive=is_positive, tokenizer=self.tokenizer,
                            emphasis=self.options.emphasis,
                            comma_padding_backtrack=self.options.comma_padding_backtrack,
                            embedding_lookup=self.embedding_lookup)

    def clear_cache(self) -> None:
        self._cache.clear()

    def _key(self, text: str) -> tuple:
        lookup = self.embedding_lookup
        lookup_key = None if lookup is None else getattr(lookup, "cache_key", id(lookup))
        return text, self.options.encoding_key(), self.cache_salt, lookup_key

    @torch.no_grad()
    def _encode_uncached(self, texts: Sequence[str]) -> list[_Encoded]:
        """Encode texts with all their chunks batched through each encoder at once."""
        per_text = [self.tokenize(text)[0] for text in texts]
        chunks = [chunk for text_chunks in per_text for chunk in text_chunks]
        hidden_parts, pooled = [], None
        for plan in self.plans():
            hidden, plan_pooled = encode_chunks(self.text_encoders[plan.name], plan, chunks,
                                                self.tokenizer.eos_token_id, self.options.emphasis)
            hidden_parts.append(hidden)
            if plan.pooled:
                pooled = plan_pooled
        hidden = torch.cat(hidden_parts, dim=-1)  # [all chunks, 77, C]
        results, start = [], 0
        for text_chunks in per_text:
            count = len(text_chunks)
            embeddings = {getattr(fix.embedding, "name", str(id(fix.embedding))): fix.embedding
                          for chunk in text_chunks for fix in chunk.fixes}
            results.append(_Encoded(
                crossattn=hidden[start : start + count].reshape(-1, hidden.shape[-1]).clone(),
                pooled=None if pooled is None else pooled[start].clone(),
                embeddings=embeddings,
            ))
            start += count
        return results

    def encode(self, texts: Sequence[str]) -> list[_Encoded]:
        """Per-text encodings, from the cache where possible; all misses are encoded in one batch."""
        keys = [self._key(text) for text in texts]
        missing = list(dict.fromkeys(text for text, key in zip(texts, keys, strict=True) if key not in self._cache))
        fresh = dict(zip(missing, self._encode_uncached(missing), strict=True)) if missing else {}
        results = []
        for text, key in zip(texts, keys, strict=True):
            encoded = fresh.get(text) or self._cache[key]
            self._cache[key] = encoded
            self._cache.move_to_end(key)
            self.used_embeddings.update(encoded.embeddings)
            results.append(encoded)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return results

    def get_learned_conditioning(self, texts: Sequence[str]) -> Tensor | dict[str, Tensor]:
        """Batched conditioning of `texts` (a list or prompt_parser.SdConditioning carrying width/height/negative).

        SD1/SD2: [B, 77k, C]. SDXL and refiner: {"crossattn": [B, 77k, C], "vector": [B, adm]}.
        """
        texts = list(texts) if not isinstance(texts, list) else texts
        if not texts:
            raise ValueError("get_learned_conditioning needs at least one text")
        encoded = self.encode(texts)
        longest = max(e.crossattn.shape[0] for e in encoded)
        if any(e.crossattn.shape[0] < longest for e in encoded):
            empty = self.encode([""])[0].crossattn
            crossattn = torch.stack([_pad_with(e.crossattn, empty, longest) for e in encoded])
        else:
            crossattn = torch.stack([e.crossattn for e in encoded])
        if not self.is_sdxl:
            return crossattn
        pooled = torch.stack([e.pooled for e in encoded])
        is_negative = bool(getattr(texts, "is_negative_prompt", False))
        if is_negative and all(text == "" for text in texts):
            crossattn, pooled = torch.zeros_like(crossattn), torch.zeros_like(pooled)
        vector = sdxl_adm_vector(pooled, self._size_conditions(texts, is_negative).to(pooled.device))
        return {"crossattn": crossattn, "vector": vector}

    def _size_conditions(self, texts: Sequence[str], is_negative: bool) -> Tensor:
        """SDXL's micro-conditioning values per text; A1111 uses the image size as original and target size."""
        width = getattr(texts, "width", None) or 1024
        height = getattr(texts, "height", None) or 1024
        opts = self.options
        crop = [opts.sdxl_crop_top, opts.sdxl_crop_left]
        if self.family == "sdxl_refiner":
            score = opts.refiner_low_aesthetic_score if is_negative else opts.refiner_high_aesthetic_score
            values = [height, width, *crop, score]
        else:
            values = [height, width, *crop, height, width]
        return torch.tensor([values], dtype=torch.float32).repeat(len(texts), 1)


def _pad_with(crossattn: Tensor, empty_chunk: Tensor, length: int) -> Tensor:
    """Append copies of the empty prompt's chunk until the text has `length` token vectors."""
    missing_chunks = (length - crossattn.shape[0]) // empty_chunk.shape[0]
    return torch.cat([crossattn, empty_chunk.repeat(missing_chunks, 1)]) if missing_chunks else crossattn
