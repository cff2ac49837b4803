"""Guess a source file's language from its name, else from tell-tale lines of its content.

The guess only pre-selects the input language; the user can always override it. ``None`` means "not sure".
"""

from __future__ import annotations

import re
from pathlib import PurePath

_BY_SUFFIX = {
    ".py": "Python", ".pyw": "Python", ".js": "JavaScript", ".mjs": "JavaScript", ".cjs": "JavaScript",
    ".ts": "TypeScript", ".tsx": "TSX", ".jsx": "JSX", ".vue": "Vue", ".go": "Go", ".c": "C", ".h": "C",
    ".cpp": "C++", ".cc": "C++", ".cxx": "C++", ".hpp": "C++", ".hh": "C++", ".java": "Java", ".cs": "C#",
    ".vb": "Visual Basic .NET", ".bas": "VBA", ".sql": "SQL", ".asm": "Assembly Language", ".s": "Assembly Language",
    ".php": "PHP", ".rb": "Ruby", ".swift": "Swift", ".kt": "Kotlin", ".kts": "Kotlin", ".r": "R",
    ".m": "Objective-C", ".mm": "Objective-C", ".pl": "Perl", ".pm": "Perl", ".sas": "SAS", ".scala": "Scala",
    ".dart": "Dart", ".rs": "Rust", ".hs": "Haskell", ".lua": "Lua", ".groovy": "Groovy", ".ex": "Elixir",
    ".exs": "Elixir", ".clj": "Clojure", ".lisp": "Lisp", ".lsp": "Lisp", ".el": "Lisp", ".jl": "Julia",
    ".f90": "Fortran", ".f": "Fortran", ".for": "Fortran", ".cbl": "COBOL", ".cob": "COBOL", ".sh": "Bash",
    ".bash": "Bash", ".ps1": "Powershell", ".pls": "PL/SQL", ".pks": "PL/SQL", ".pkb": "PL/SQL", ".css": "CSS",
    ".rkt": "Racket", ".html": "HTML", ".htm": "HTML", ".coffee": "CoffeeScript", ".pas": "Pascal", ".pp": "Pascal",
    ".fs": "F#", ".fsx": "F#", ".ml": "OCaml", ".erl": "Erlang", ".zig": "Zig", ".nim": "Nim", ".elm": "Elm",
    ".cr": "Crystal", ".d": "D", ".adb": "Ada", ".ads": "Ada", ".pro": "Prolog", ".md": "Natural Language",
    ".txt": "Natural Language",
}

_SHEBANGS = (("python", "Python"), ("node", "JavaScript"), ("bash", "Bash"), ("/sh", "Bash"), ("zsh", "Bash"),
             ("ruby", "Ruby"), ("perl", "Perl"), ("php", "PHP"), ("lua", "Lua"), ("Rscript", "R"),
             ("pwsh", "Powershell"), ("julia", "Julia"), ("elixir", "Elixir"))

# (language, pattern, weight): checked against the whole text with re.MULTILINE
_CLUES: list[tuple[str, str, int]] = [
    ("PHP", r"^<\?php", 10),
    ("HTML", r"^\s*<(!DOCTYPE html|html|head|body)\b", 8),
    ("C++", r"^\s*#include\s*<(iostream|vector|string|map|memory|algorithm)>", 6),
    ("C++", r"\bstd::|\bcout\s*<<|\btemplate\s*<|\bnamespace\s+\w+", 3),
    ("C", r"^\s*#include\s*<(stdio|stdlib|string|math)\.h>", 5),
    ("C", r"\bprintf\s*\(|\bmalloc\s*\(", 2),
    ("C#", r"^\s*using\s+System|\bConsole\.Write(Line)?\s*\(", 6),
    ("Java", r"\bpublic\s+static\s+void\s+main\s*\(|\bSystem\.out\.print", 6),
    ("Go", r"^package\s+\w+\s*$|^func\s+\w+\s*\(|\bfmt\.Print", 5),
    ("Rust", r"^\s*fn\s+\w+\s*[(<]|\blet\s+mut\b|\bprintln!\s*\(|^\s*use\s+std::", 5),
    ("Kotlin", r"^\s*fun\s+\w+\s*\(|\bprintln\s*\(\s*\"\$", 4),
    ("Swift", r"^\s*import\s+(Foundation|UIKit)|^\s*func\s+\w+\s*\(.*\)\s*->", 5),
    ("Python", r"^\s*def\s+\w+\s*\(.*\)\s*(->\s*[^:]+)?:\s*$|^\s*(from\s+\w[\w.]*\s+)?import\s+\w+\s*$", 4),
    ("Python", r"^\s*print\s*\(|^if\s+__name__\s*==|^\s*elif\b|\bself\.\w+|^\s*class\s+\w+(\(.*\))?:\s*$", 2),
    ("TypeScript", r"^\s*(interface|type)\s+\w+\s*[={]|:\s*(string|number|boolean)\b", 4),
    ("JavaScript", r"\bconsole\.log\s*\(|^\s*(const|let)\s+\w+\s*=|\bfunction\s+\w+\s*\(|=>\s*[{(]", 3),
    ("JavaScript", r"\brequire\s*\(|\bmodule\.exports\b|\bdocument\.", 2),
    ("Ruby", r"^\s*def\s+\w+[?!]?\s*(\(.*\))?\s*$|^\s*end\s*$|\bputs\s", 3),
    ("Lua", r"^\s*local\s+\w+\s*=|^\s*function\s+\w+[.:]?\w*\s*\(.*\)\s*$|\bthen\s*$", 3),
    ("Bash", r"^\s*(echo|export|fi|done|esac)\b|\$\{\w+\}|^\s*if\s+\[", 3),
    ("Perl", r"^\s*my\s+[$@%]\w+|^\s*use\s+strict;", 5),
    ("SQL", r"^\s*(SELECT|INSERT\s+INTO|CREATE\s+TABLE|UPDATE|DELETE\s+FROM)\b", 4),
    ("Haskell", r"^\s*\w+\s*::\s*[\w\[\]() ->]+$|^main\s*=\s*do\b|^module\s+\w+\s+where", 5),
    ("Elixir", r"^\s*defmodule\s+\w+|^\s*defp?\s+\w+.*\bdo\s*$|IO\.puts", 5),
    ("R", r"<-\s*function\s*\(|\bcat\s*\(|<-\s*c\(", 4),
    ("Julia", r"^\s*function\s+\w+\(.*\)\s*$|^\s*end\s*$|\bprintln\(", 2),
    ("Powershell", r"\bWrite-Host\b|^\s*param\s*\(|\$\w+\s*=.*\|\s*ForEach-Object", 5),
    ("CSS", r"^\s*[.#]?[\w-]+\s*\{\s*$|^\s*[\w-]+\s*:\s*[^;]+;\s*$", 1),
    ("Dart", r"^\s*void\s+main\s*\(\s*\)|\bfinal\s+\w+\s*=", 2),
    ("Scala", r"^\s*object\s+\w+|^\s*def\s+\w+\s*\(.*\)\s*:\s*\w+\s*=", 4),
    ("Clojure", r"^\s*\(defn?\s+", 6),
    ("Racket", r"^#lang\s+racket", 10),
    ("Lisp", r"^\s*\(defun\s+", 6),
    ("COBOL", r"\bIDENTIFICATION\s+DIVISION\b|\bPROCEDURE\s+DIVISION\b", 10),
    ("Fortran", r"^\s*program\s+\w+|^\s*end\s+program\b|^\s*implicit\s+none", 6),
    ("Pascal", r"^\s*program\s+\w+;|^\s*begin\s*$|\bwriteln\s*\(", 4),
]


def detect_from_filename(filename: str | None) -> str | None:
    if not filename:
        return None
    return _BY_SUFFIX.get(PurePath(filename).suffix.lower())


def detect_from_content(code: str) -> str | None:
    """The language whose clues score highest (a shebang wins outright); None for empty or clue-less text."""
    text = code.strip()
    if not text:
        return None
    first = text.splitlines()[0]
    if first.startswith("#!"):
        for needle, language in _SHEBANGS:
            if needle in first:
                return language
    scores: dict[str, int] = {}
    for language, pattern, weight in _CLUES:
        hits = len(re.findall(pattern, text, flags=re.MULTILINE))
        if hits:
            scores[language] = scores.get(language, 0) + weight * min(hits, 5)
    if not scores:
        return None
    best = max(scores.items(), key=lambda item: item[1])
    return best[0] if best[1] >= 2 else None


def detect_language(code: str, filename: str | None = None) -> str | None:
    """The file name's language when it has a known suffix, else the content's best guess."""
    return detect_from_filename(filename) or detect_from_content(code)
