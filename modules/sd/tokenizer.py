"""CLIP's byte-level BPE tokenizer, offline and dependency-light.

Gives the same ids as transformers' `CLIPTokenizer` (the tokenizers-backed one in transformers 5.x), which is
what A1111 uses for SD1: NFC, whitespace runs collapsed, per-character lowercase (no final-sigma rule, no ftfy,
no HTML unescaping), CLIP's regex split, byte-to-unicode mapping, then BPE with `</w>` marking word ends.
The literal texts `<|startoftext|>` / `<|endoftext|>` become their special ids, as in transformers.
"""

from __future__ import annotations

import functools
import itertools
import unicodedata

import regex

from modules.sd.clip_vocab import END_OF_WORD, END_TOKEN, START_TOKEN, bytes_to_unicode, load_clip_bpe

# CLIP's pre-tokenisation: the special literals, English contractions, letter runs, single digits, symbol runs.
WORD_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
)
SPECIAL_PATTERN = regex.compile(r"(<\|startoftext\|>|<\|endoftext\|>)")
BPE_CACHE_SIZE = 1 << 16


class CLIPTokenizer:
    """Text <-> CLIP token ids (vocabulary of 49408). `encode` adds no start/end tokens."""

    bos_token_id = 49406
    eos_token_id = 49407
    model_max_length = 77

    def __init__(self, vocab: dict[str, int] | None = None, merges: list[tuple[str, str]] | None = None):
        if vocab is None or merges is None:
            vocab, merges = load_clip_bpe()
        self.encoder = vocab
        self.decoder = {index: token for token, index in vocab.items()}
        self.merge_ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {char: byte for byte, char in self.byte_encoder.items()}
        self.bpe = functools.lru_cache(maxsize=BPE_CACHE_SIZE)(self._bpe)

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def token_to_id(self, token: str) -> int | None:
        """Id of a vocabulary entry such as `cat</w>` (word end) or `cat` (word start); None if absent."""
        return self.encoder.get(token)

    def id_to_token(self, index: int) -> str | None:
        return self.decoder.get(index)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without start/end tokens and without truncation."""
        ids: list[int] = []
        for segment in SPECIAL_PATTERN.split(text):
            if segment in (START_TOKEN, END_TOKEN):
                ids.append(self.encoder[segment])
            elif segment:
                for word in split_words(normalize(segment)):
                    encoded = "".join(self.byte_encoder[b] for b in word.encode("utf-8"))
                    ids.extend(self.encoder[piece] for piece in self.bpe(encoded))
        return ids

    def tokenize(self, text: str) -> list[str]:
        """The vocabulary entries `encode` would return, for inspection."""
        return [self.decoder[i] for i in self.encode(text)]

    def decode(self, ids: list[int]) -> str:
        """Ids back to text; word ends become spaces, so spacing is normalised and case is lowered."""
        text = "".join(self.decoder[i] for i in ids)
        data = bytes(self.byte_decoder[c] for c in text if c in self.byte_decoder)
        return data.decode("utf-8", errors="replace").replace(END_OF_WORD, " ").strip()

    def tokenize_padded(self, text: str, length: int = 77, pad_with_eos: bool = True) -> list[int]:
        """[start] + ids + [end], truncated to `length` and padded to it.

        SD1's CLIP pads with the end token; OpenCLIP encoders (SD2, SDXL's second encoder) pad with 0.
        """
        ids = [self.bos_token_id, *self.encode(text)[: length - 2], self.eos_token_id]
        pad = self.eos_token_id if pad_with_eos else 0
        return ids + [pad] * (length - len(ids))

    def _bpe(self, word: str) -> tuple[str, ...]:
        """Merge a byte-encoded word's symbols by merge rank until no known pair remains."""
        symbols = [*word[:-1], word[-1] + END_OF_WORD]
        while len(symbols) > 1:
            pairs = itertools.pairwise(symbols)
            best = min(pairs, key=lambda pair: self.merge_ranks.get(pair, float("inf")))
            if best not in self.merge_ranks:
                break
            symbols = merge_pair(symbols, best)
        return tuple(symbols)


def merge_pair(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    """Replace every non-overlapping occurrence of `pair`, left to right, with its concatenation."""
    merged: list[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            merged.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return merged


def normalize(text: str) -> str:
    """NFC, then lowercase character by character (transformers' Lowercase has no context-dependent rules).

    Whitespace needs no collapsing here: `split_words` drops it anyway.
    """
    return "".join(char.lower() for char in unicodedata.normalize("NFC", text))


def split_words(text: str) -> list[str]:
    """CLIP's regex split; a special literal that only appears after lowercasing splits like GPT-2 would."""
    words: list[str] = []
    for word in WORD_PATTERN.findall(text):
        if word in (START_TOKEN, END_TOKEN):
            words.extend(("<|", word[2:-2], "|>"))
        else:
            words.append(word)
    return words


@functools.cache
def get_clip_tokenizer() -> CLIPTokenizer:
    """The process-wide tokenizer (the vocabulary is read once)."""
    return CLIPTokenizer()
