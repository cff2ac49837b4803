"""In which order to translate a long file's chunks, and what each chunk is told about the ones already done.

Chunks go dependencies first (a function is translated before its callers), so each request can be given the
signatures of the translated code it calls; ties and cycles fall back to source order.
"""

from __future__ import annotations

import re

from code_translator.chunking import Chunk

_KEYWORD_SIGNATURE = re.compile(
    r"^\s{0,4}(?:export\s+)?(?:default\s+)?(?:pub(?:\([\w\s]+\))?\s+)?(?:public\s+|private\s+|protected\s+|static\s+|"
    r"abstract\s+|final\s+|async\s+|local\s+|inline\s+)*"
    r"(?:def|function\*?|class|fn|func|fun|sub|procedure|defn|defun|defmodule|struct|enum|interface|trait|impl|"
    r"module|object|record)\s+[A-Za-z_][^\n]*$")
_ARROW_SIGNATURE = re.compile(r"^\s{0,4}(?:export\s+)?(?:const|let|var)\s+\w+\s*=\s*(?:async\s*)?"
                              r"(?:\([^)]*\)|\w+)\s*=>")
_C_SIGNATURE = re.compile(r"^(?:[A-Za-z_][\w:<>*&\[\],]*\s+)+[*&]*([A-Za-z_][\w:]*)\s*\([^;]*\)\s*(?:const\s*)?"
                          r"(?:->\s*[\w:<>*&]+\s*)?\{?\s*$")
_CONTROL_WORDS = {"if", "for", "while", "switch", "return", "catch", "sizeof", "else"}


def translation_order(chunks: list[Chunk]) -> list[int]:
    """Chunk indexes, each after the chunks it depends on: the earliest ready chunk first, cycles broken likewise."""
    remaining = {chunk.index: set(chunk.depends_on) for chunk in chunks}
    order: list[int] = []
    while remaining:
        ready = [i for i, deps in remaining.items() if not deps & remaining.keys()]
        nxt = min(ready) if ready else min(remaining)
        order.append(nxt)
        del remaining[nxt]
    return order


def signatures(code: str) -> list[str]:
    """Definition lines of translated code (functions, classes, types), trimmed of an opening brace or colon."""
    found = []
    for line in code.splitlines():
        c_style = _C_SIGNATURE.match(line)
        if c_style and c_style.group(1) in _CONTROL_WORDS:
            c_style = None
        if _KEYWORD_SIGNATURE.match(line) or _ARROW_SIGNATURE.match(line) or c_style:
            found.append(line.rstrip().rstrip("{").rstrip())
    return found


def context_for(chunk: Chunk, translated: dict[int, str], budget_chars: int) -> str:
    """Signatures from already-translated chunks: the ones this chunk depends on first, then the rest, up to
    ``budget_chars`` characters."""
    ordered = sorted(translated, key=lambda i: (i not in chunk.depends_on, i))
    lines: list[str] = []
    size = 0
    for index in ordered:
        for line in signatures(translated[index]):
            if size + len(line) + 1 > budget_chars:
                return "\n".join(lines)
            lines.append(line)
            size += len(line) + 1
    return "\n".join(lines)
