"""Prompt text → 77-token chunks with per-token weights, A1111's `tokenize_line` rules, and the UI token counter.

Pure Python (no torch): a chunk is token ids, one multiplier per token and the textual-inversion fixes to apply.
Rules, as in A1111 (`sd_hijack_clip.FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line`):

* Each weighted fragment from `parse_prompt_attention` is tokenised on its own (no start/end tokens) and its tokens
  fill chunks of 75; `["BREAK", -1]` closes the current chunk. Emphasis mode "None" skips the attention parse, so
  brackets and BREAK stay literal text.
* Comma backtrack: when a chunk is full and the last comma in it is at most `comma_padding_backtrack` tokens back,
  the tokens after that comma move to the next chunk (0 disables it).
* A closed chunk is padded to 75 with the end token and wrapped as [start] + 75 + [end]; start, end and padding get
  multiplier 1.0. OpenCLIP encoders then re-pad with 0 after the first end token (`pad_after_first_end`).
* A textual-inversion embedding found by the lookup becomes `n` placeholder ids (0) and a `ChunkFix`; it never
  straddles chunks: if it does not fit, the chunk is closed first.
* The token count is 75 per closed chunk plus the tokens of the last one; an empty prompt is one chunk.

One deliberate difference: A1111 leaves the fixes of tokens moved by the comma backtrack in the old chunk (so the
embedding lands on padding); here they move with their tokens.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from modules import prompt_parser
from modules.sd.tokenizer import CLIPTokenizer, get_clip_tokenizer

CHUNK_LENGTH = 75
PLACEHOLDER_ID = 0
EMPHASIS_MODES = ("None", "Ignore", "Original", "No norm")
_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")


class ChunkFix(NamedTuple):
    """A textual-inversion embedding to write at chunk-local `offset` (rows offset+1.. of the 77, after BOS)."""

    offset: int
    embedding: Any


class EmbeddingLookup(Protocol):
    """What the textual-inversion database offers the chunker."""

    def find_at(self, token_ids: Sequence[int], offset: int) -> tuple[Any, int] | None:
        """The embedding whose trigger token ids start at `token_ids[offset]`, and how many ids it spans."""
        ...


@dataclass
class PromptChunk:
    """77 token ids and multipliers once closed; fixes say where embedding vectors replace token vectors."""

    tokens: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)
    fixes: list[ChunkFix] = field(default_factory=list)


def embedding_vector_count(embedding: Any) -> int:
    """Number of token positions an embedding fills: rows of `.vectors` (a tensor, or a dict per encoder)."""
    vectors = embedding.vectors
    if isinstance(vectors, dict):
        vectors = next(iter(vectors.values()))
    return int(vectors.shape[0])


def parse_weighted(text: str, emphasis: str) -> list[list]:
    """`[fragment, weight]` pairs; with emphasis "None" the whole text is one literal fragment of weight 1."""
    if emphasis == "None":
        return [[text, 1.0]]
    return prompt_parser.parse_prompt_attention(text)


class _ChunkBuilder:
    """The mutable state of one `tokenize_prompt` run, mirroring A1111's closure variables."""

    def __init__(self, bos: int, eos: int) -> None:
        self.bos, self.eos = bos, eos
        self.chunks: list[PromptChunk] = []
        self.chunk = PromptChunk()
        self.token_count = 0
        self.last_comma = -1

    def close(self, is_last: bool = False) -> None:
        chunk = self.chunk
        self.token_count += len(chunk.tokens) if is_last else CHUNK_LENGTH
        missing = CHUNK_LENGTH - len(chunk.tokens)
        chunk.tokens = [self.bos, *chunk.tokens, *[self.eos] * missing, self.eos]
        chunk.multipliers = [1.0, *chunk.multipliers, *[1.0] * missing, 1.0]
        self.chunks.append(chunk)
        self.chunk = PromptChunk()
        self.last_comma = -1

    def backtrack_to_last_comma(self) -> None:
        """Close the chunk after its last comma; what followed the comma starts the next chunk."""
        cut = self.last_comma + 1
        old = self.chunk
        moved = PromptChunk(old.tokens[cut:], old.multipliers[cut:])
        moved.fixes = [ChunkFix(fix.offset - cut, fix.embedding) for fix in old.fixes if fix.offset >= cut]
        old.fixes = [fix for fix in old.fixes if fix.offset < cut]
        old.tokens, old.multipliers = old.tokens[:cut], old.multipliers[:cut]
        self.close()
        self.chunk = moved


def tokenize_prompt(
    text: str,
    tokenizer: CLIPTokenizer | None = None,
    *,
    emphasis: str = "Original",
    comma_padding_backtrack: int = 20,
    embedding_lookup: EmbeddingLookup | None = None,
) -> tuple[list[PromptChunk], int]:
    """Chunks of one prompt (each 77 tokens, EOS-padded) and its token count, by A1111's rules."""
    tokenizer = tokenizer or get_clip_tokenizer()
    comma = tokenizer.token_to_id(",</w>")
    parsed = parse_weighted(text, emphasis)
    state = _ChunkBuilder(tokenizer.bos_token_id, tokenizer.eos_token_id)
    for fragment, weight in parsed:
        if fragment == "BREAK" and weight == -1:
            state.close()
            continue
        tokens = tokenizer.encode(fragment)
        position = 0
        while position < len(tokens):
            token = tokens[position]
            chunk = state.chunk
            if token == comma:
                state.last_comma = len(chunk.tokens)
            elif (
                comma_padding_backtrack != 0
                and len(chunk.tokens) == CHUNK_LENGTH
                and state.last_comma != -1
                and len(chunk.tokens) - state.last_comma <= comma_padding_backtrack
            ):
                state.backtrack_to_last_comma()
            if len(state.chunk.tokens) == CHUNK_LENGTH:
                state.close()
            found = embedding_lookup.find_at(tokens, position) if embedding_lookup is not None else None
            if found is None or found[0] is None:
                state.chunk.tokens.append(token)
                state.chunk.multipliers.append(weight)
                position += 1
                continue
            embedding, span = found
            count = embedding_vector_count(embedding)
            if count > CHUNK_LENGTH:
                raise ValueError(f"embedding {getattr(embedding, 'name', '?')!r} has {count} vectors; at most "
                                 f"{CHUNK_LENGTH} fit in a prompt chunk")
            if len(state.chunk.tokens) + count > CHUNK_LENGTH:
                state.close()
            state.chunk.fixes.append(ChunkFix(len(state.chunk.tokens), embedding))
            state.chunk.tokens += [PLACEHOLDER_ID] * count
            state.chunk.multipliers += [weight] * count
            position += span
    if state.chunk.tokens or not state.chunks:
        state.close(is_last=True)
    return state.chunks, state.token_count


def pad_after_first_end(tokens: Sequence[int], end_id: int, pad_id: int) -> list[int]:
    """OpenCLIP's padding (SD2, SDXL bigG): everything after the first end token becomes `pad_id`."""
    tokens = list(tokens)
    if end_id == pad_id or end_id not in tokens:
        return tokens
    first = tokens.index(end_id)
    return tokens[: first + 1] + [pad_id] * (len(tokens) - first - 1)


def target_token_count(token_count: int) -> int:
    """Room the chunks give: the count rounded up to a multiple of 75 (at least 75)."""
    return math.ceil(max(token_count, 1) / CHUNK_LENGTH) * CHUNK_LENGTH


def strip_extra_networks(text: str) -> str:
    """The prompt without `<name:args>` tags, via `modules.extra_networks` when that module exists."""
    try:
        from modules import extra_networks
    except ImportError:
        return _EXTRA_NETWORK.sub("", text)
    parse = getattr(extra_networks, "parse_prompt", None) or getattr(extra_networks, "parse_extra_networks", None)
    if parse is None:
        return _EXTRA_NETWORK.sub("", text)
    return parse(text)[0]


def count_tokens(
    text: str,
    steps: int = 20,
    *,
    is_positive: bool = True,
    tokenizer: CLIPTokenizer | None = None,
    emphasis: str = "Original",
    comma_padding_backtrack: int = 20,
    embedding_lookup: EmbeddingLookup | None = None,
) -> tuple[int, int]:
    """(tokens, room) for the UI counter, like A1111's `update_token_counter` (styles already applied).

    Extra-network tags are removed; a positive prompt is split on AND; every scheduled variant is counted and the
    longest wins. A prompt that fails to parse mid-typing is counted as plain text.
    """
    try:
        text = strip_extra_networks(text)
        flat = prompt_parser.get_multicond_prompt_list([text])[1] if is_positive else [text]
        schedules = prompt_parser.get_learned_conditioning_prompt_schedules(flat, steps)
    except Exception:  # the counter must never fail while the user types
        schedules = [[[steps, text]]]
    variants = [variant for schedule in schedules for _, variant in schedule] or [text]
    counts = [
        tokenize_prompt(variant, tokenizer, emphasis=emphasis, comma_padding_backtrack=comma_padding_backtrack,
                        embedding_lookup=embedding_lookup)[1]
        for variant in variants
    ]
    token_count = max(counts)
    return token_count, target_token_count(token_count)
