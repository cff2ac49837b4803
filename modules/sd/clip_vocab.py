"""The original CLIP BPE vocabulary, read offline from the copy open-clip-torch ships.

`bpe_simple_vocab_16e6.txt.gz` holds a version header and the merge list; the 49408-entry vocabulary is derived
from it exactly as OpenAI's CLIP does: 256 byte symbols, the same with `</w>`, one token per merge, then
`<|startoftext|>` (49406) and `<|endoftext|>` (49407).
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path

BPE_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"
MERGE_COUNT = 49152 - 256 - 2  # CLIP keeps the first 48894 merges of the file
START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable-character map, so BPE runs on text without whitespace/control chars."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    # dict order matters: the vocabulary lists byte symbols printable-first, as CLIP does
    return {b: mapping[b] for b in [*printable, *(b for b in range(256) if b not in printable)]}


def find_bpe_file() -> Path:
    """Locate the BPE data inside the installed open_clip package without importing it (importing pulls torch)."""
    spec = importlib.util.find_spec("open_clip")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / BPE_FILE_NAME
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"CLIP tokenizer data {BPE_FILE_NAME} not found: it ships with the open-clip-torch package "
        "(pip install open-clip-torch)."
    )


@functools.cache
def load_clip_bpe(path: str | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Return (vocabulary token -> id, merges in rank order). Cached: the file is read once per process."""
    with gzip.open(path or find_bpe_file(), "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")[1 : MERGE_COUNT + 1]
    merges = [tuple(line.split()) for line in lines]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + END_OF_WORD for s in symbols] + ["".join(pair) for pair in merges]
    tokens += [START_TOKEN, END_TOKEN]
    return {token: index for index, token in enumerate(tokens)}, merges
