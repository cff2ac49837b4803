"""The text encoder as the demo trainer runs it: CLIP tokens of 77-token chunks in, hidden states out.

Captions are tokenised by ``modules.conditioning_chunks.tokenize_prompt`` — the function the pipeline uses — so the
encoder trains on exactly the [start] + tokens + end-token padding + [end] chunks it will be fed when generating (an
empty caption, used for classifier-free guidance dropout, becomes the empty prompt's chunk).

Only a few dozen of CLIP's 49408 vocabulary rows ever occur in captions. ``TrainableTextEncoder`` trains those rows
as a small separate table and writes them back into the full table for export (``merged``); the rest keep their
initial values. The maths is identical to training the full table, but the optimizer and the EMA skip 12 M
parameters that would only ever receive zero gradients.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from modules.conditioning_chunks import tokenize_prompt
from modules.sd.text_encoders import CLIPTextEncoder
from modules.sd.tokenizer import get_clip_tokenizer
from modules.training import shapes_dataset as ds


@functools.lru_cache(maxsize=65536)
def caption_tokens(text: str) -> tuple[int, ...]:
    """The pipeline's first 77-token chunk of ``text`` (captions are far shorter than one chunk)."""
    chunks, _ = tokenize_prompt(text)
    return tuple(chunks[0].tokens)


def token_batch(texts: Sequence[str]) -> Tensor:
    return torch.tensor([caption_tokens(t) for t in texts], dtype=torch.long)


def caption_vocabulary() -> list[int]:
    """Every token id a dataset caption (or the empty prompt) can contain."""
    tokenizer = get_clip_tokenizer()
    words = [*ds.COLOURS, *ds.SHAPES, *ds.POSITION_NAMES, *ds.SIZE_NAMES]
    first = ds.ShapeSpec(ds.SHAPES[0], ds.COLOURS[0], ds.COLOURS[1], ds.POSITION_NAMES[0], ds.SIZE_NAMES[0])
    texts = [*words, *(ds.caption(first, i) for i in range(len(ds.CAPTION_TEMPLATES)))]
    ids = {tokenizer.bos_token_id, tokenizer.eos_token_id}
    for text in texts:  # CLIP's BPE works word by word, so the words' tokens are all the captions' tokens
        ids.update(tokenizer.encode(text))
    return sorted(ids)


class TrainableTextEncoder(nn.Module):
    """A ``CLIPTextEncoder`` whose vocabulary table is trained only on ``token_ids`` (see the module docstring)."""

    def __init__(self, encoder: CLIPTextEncoder, token_ids: Iterable[int]) -> None:
        super().__init__()
        self.encoder = encoder
        table = encoder.transformer.text_model.embeddings.token_embedding.weight
        table.requires_grad_(False)
        ids = torch.tensor(sorted(set(token_ids)), dtype=torch.long)
        lookup = torch.full((table.shape[0],), -1, dtype=torch.long)
        lookup[ids] = torch.arange(len(ids))
        self.register_buffer("token_ids", ids)
        self.register_buffer("lookup", lookup, persistent=False)
        self.rows = nn.Parameter(table.detach()[ids].clone())

    def forward(self, tokens: Tensor) -> Tensor:
        """Hidden states [B, 77, D] of the last layer after the final norm (SD1's conditioning at clip skip 1)."""
        index = self.lookup[tokens]
        if bool((index < 0).any()):
            unknown = sorted(set(tokens[index < 0].tolist()))[:5]
            raise ValueError(f"token ids {unknown} are outside the training vocabulary")
        return self.encoder(tokens, input_embeds=self.rows[index], need_pooled=False).hidden

    @torch.no_grad()
    def merged(self) -> CLIPTextEncoder:
        """The encoder with the trained rows written into its full vocabulary table."""
        table = self.encoder.transformer.text_model.embeddings.token_embedding.weight
        table[self.token_ids] = self.rows.detach().to(table.dtype)
        return self.encoder
