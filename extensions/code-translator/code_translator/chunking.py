"""Split a long source file into chunks that fit a token budget, along top-level definitions.

Python is split with ``ast`` (each top-level statement with the comments and decorators above it). Other languages
use a heuristic: with braces, a unit ends where the brace depth is back to zero at a statement or block end; without,
a new unit starts at an unindented line after a blank line. Units are packed, in source order, into chunks under the
budget; a single definition larger than the budget is cut at blank lines into parts that are translated one after
the other. Each unit records the names it defines and uses, from which :mod:`code_translator.ordering` derives the
order to translate the chunks in.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass, field

TokenCounter = Callable[[str], int]

_WORD_OR_SYMBOL = re.compile(r"\w+|[^\w\s]")
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")
_DEFINITION = re.compile(r"\b(?:function\*?|def|class|struct|enum|interface|trait|type|fn|func|fun|sub|procedure|"
                         r"module|defn|defun|defmodule|let|const|var|val|local function|local)\s+([A-Za-z_]\w*)")
_C_STYLE_DEFINITION = re.compile(r"^(?:[A-Za-z_][\w:<>*&\[\],]*\s+)+[*&]*([A-Za-z_]\w*)\s*\(")
_CONTROL_WORDS = {"if", "for", "while", "switch", "return", "catch", "sizeof", "else", "do", "case", "new", "delete"}
_STRING_OR_LINE_COMMENT = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`(?:\\.|[^`\\])*`|//.*$')


def estimate_tokens(text: str) -> int:
    """A rough, tokenizer-free count: words and symbols, or a quarter of the characters, whichever is larger.

    Code tokenizers split identifiers and whitespace runs into several tokens, so this errs on the high side."""
    return max(len(_WORD_OR_SYMBOL.findall(text)), (len(text) + 3) // 4)


@dataclass
class Unit:
    """One top-level piece of the file, as text that includes its line endings."""

    text: str
    defines: set[str] = field(default_factory=set)
    uses: set[str] = field(default_factory=set)


@dataclass
class Chunk:
    """What one request translates; ``index`` is its position in source order, ``depends_on`` holds indexes."""

    index: int
    text: str
    tokens: int
    defines: set[str] = field(default_factory=set)
    uses: set[str] = field(default_factory=set)
    depends_on: set[int] = field(default_factory=set)
    continues_previous: bool = False


# --- units ------------------------------------------------------------------------------------------------------

def _python_units(code: str) -> list[Unit] | None:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    lines = code.splitlines(keepends=True)
    units: list[Unit] = []
    start = 0
    for node in tree.body:
        end = node.end_lineno or node.lineno
        units.append(Unit("".join(lines[start:end]), _python_defines(node), _python_uses(node)))
        start = end
    if start < len(lines):
        if units:
            units[-1].text += "".join(lines[start:])
        else:
            units.append(Unit("".join(lines[start:])))
    return units


def _python_defines(node: ast.stmt) -> set[str]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {node.name}
    if isinstance(node, ast.Import | ast.ImportFrom):
        return {(alias.asname or alias.name).split(".")[0] for alias in node.names if alias.name != "*"}
    names: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
            names.add(sub.id)
        elif isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(sub.name)
    return names


def _python_uses(node: ast.stmt) -> set[str]:
    return {sub.id for sub in ast.walk(node) if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load)}


def _code_only(line: str, in_block_comment: bool) -> tuple[str, bool]:
    """The line without strings, line comments and block comments; and whether a block comment is still open."""
    out = ""
    rest = line
    while rest:
        if in_block_comment:
            end = rest.find("*/")
            if end < 0:
                return out, True
            rest, in_block_comment = rest[end + 2:], False
            continue
        start = rest.find("/*")
        head = rest if start < 0 else rest[:start]
        out += _STRING_OR_LINE_COMMENT.sub(" ", head)
        if start < 0 or "//" in head:
            break
        rest, in_block_comment = rest[start + 2:], True
    return out, in_block_comment


def _heuristic_boundaries(lines: list[str]) -> list[int]:
    """Indexes of lines that start a new unit."""
    uses_braces = sum(line.count("{") for line in lines) >= 1
    starts = [0]
    if uses_braces:
        depth, in_comment = 0, False
        for n, line in enumerate(lines[:-1]):
            code, in_comment = _code_only(line, in_comment)
            depth = max(0, depth + code.count("{") - code.count("}") + code.count("(") - code.count(")"))
            stripped = code.strip()
            following = lines[n + 1]
            if depth == 0 and not in_comment and (
                    (stripped.endswith(("}", ";")) and not following[:1].isspace())
                    or (not line.strip() and following.strip())):
                starts.append(n + 1)
    else:
        for n in range(1, len(lines)):
            line = lines[n]
            if line.strip() and not line[:1].isspace() and not lines[n - 1].strip():
                starts.append(n)
    return sorted(set(starts))


def _heuristic_units(code: str) -> list[Unit]:
    lines = code.splitlines(keepends=True)
    if not lines:
        return []
    starts = _heuristic_boundaries(lines) + [len(lines)]
    units = []
    for a, b in zip(starts, starts[1:], strict=False):
        text = "".join(lines[a:b])
        if units and not text.strip():  # blank lines join the unit before them
            units[-1].text += text
            continue
        units.append(Unit(text, _heuristic_defines(text)))
    for unit in units:
        unit.uses = set(_IDENTIFIER.findall(unit.text)) - unit.defines
    return units


def _heuristic_defines(text: str) -> set[str]:
    names = set(_DEFINITION.findall(text))
    for line in text.splitlines():
        if line[:1].isspace():
            continue
        match = _C_STYLE_DEFINITION.match(line)
        if match and match.group(1) not in _CONTROL_WORDS:
            names.add(match.group(1))
    return names - _CONTROL_WORDS


def split_units(code: str, language: str) -> list[Unit]:
    """The file's top-level units in source order; their texts concatenate to ``code`` exactly."""
    units = _python_units(code) if language == "Python" else None
    return units if units is not None else _heuristic_units(code)


# --- chunks -----------------------------------------------------------------------------------------------------

def _cut(text: str, budget: int, count: TokenCounter) -> list[str]:
    """Cut an oversized unit into consecutive parts under the budget, preferring blank lines as cut points."""
    lines = text.splitlines(keepends=True)
    parts: list[str] = []
    current: list[str] = []
    for line in lines:
        if current and count("".join(current) + line) > budget:
            blank = max((n for n, ln in enumerate(current) if not ln.strip() and n > len(current) // 2), default=0)
            cut = blank if blank > 0 else len(current)
            parts.append("".join(current[:cut]))
            current = current[cut:]
        while count(line) > budget and len(line) > 1:  # one enormous line: cut it by characters
            size = max(1, len(line) * budget // max(count(line), 1))
            if current:
                parts.append("".join(current))
                current = []
            parts.append(line[:size])
            line = line[size:]
        current.append(line)
    if current:
        parts.append("".join(current))
    return [part for part in parts if part]


def plan_chunks(code: str, language: str, budget: int, count: TokenCounter = estimate_tokens) -> list[Chunk]:
    """Chunks in source order, each under ``budget`` tokens (by ``count``), with their dependencies filled in."""
    units = split_units(code, language)
    chunks: list[Chunk] = []
    pending: list[Unit] = []

    def close_pending() -> None:
        if pending:
            text = "".join(u.text for u in pending)
            chunks.append(Chunk(len(chunks), text, count(text), set().union(*(u.defines for u in pending)),
                                set().union(*(u.uses for u in pending))))
            pending.clear()

    for unit in units:
        if count(unit.text) > budget:
            close_pending()
            for n, part in enumerate(_cut(unit.text, budget, count)):
                uses = set(_IDENTIFIER.findall(part)) & unit.uses
                chunks.append(Chunk(len(chunks), part, count(part), unit.defines if n == 0 else set(), uses,
                                    continues_previous=n > 0))
            continue
        if pending and count("".join(u.text for u in pending) + unit.text) > budget:
            close_pending()
        pending.append(unit)
    close_pending()
    _link(chunks)
    return chunks


def _link(chunks: list[Chunk]) -> None:
    """Fill ``depends_on``: a chunk needs the chunk that defines a name it uses (the nearest earlier definition,
    else the first later one); a continued part needs the part before it."""
    definers: dict[str, list[int]] = {}
    for chunk in chunks:
        for name in chunk.defines:
            definers.setdefault(name, []).append(chunk.index)
    for chunk in chunks:
        for name in chunk.uses - chunk.defines:
            places = definers.get(name)
            if not places:
                continue
            earlier = [i for i in places if i < chunk.index]
            chunk.depends_on.add(earlier[-1] if earlier else places[0])
        if chunk.continues_previous:
            chunk.depends_on.add(chunk.index - 1)
        chunk.depends_on.discard(chunk.index)
