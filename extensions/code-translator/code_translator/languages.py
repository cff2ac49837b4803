"""The languages the translator offers, and per language: Gradio's highlighting mode and a file extension.

The list keeps every language of the well-known ai-code-translator (so its users find theirs) and adds a few that
its users asked for (VBA, Visual Basic 6) or that are common today. "Natural Language" is the pseudo-language that
switches the prompt to describe-to-code or explain-code.
"""

from __future__ import annotations

NATURAL_LANGUAGE = "Natural Language"

# name -> (Gradio gr.Code language or None, file extension for downloads)
_TABLE: dict[str, tuple[str | None, str]] = {
    "Ada": (None, "adb"),
    "Assembly Language": (None, "asm"),
    "Bash": ("shell", "sh"),
    "C": ("c", "c"),
    "C#": (None, "cs"),
    "C++": ("cpp", "cpp"),
    "Clojure": (None, "clj"),
    "COBOL": (None, "cbl"),
    "CoffeeScript": (None, "coffee"),
    "Crystal": (None, "cr"),
    "CSS": ("css", "css"),
    "D": (None, "d"),
    "Dart": (None, "dart"),
    "Elixir": (None, "ex"),
    "Elm": (None, "elm"),
    "Erlang": (None, "erl"),
    "F#": (None, "fs"),
    "Fortran": (None, "f90"),
    "Go": (None, "go"),
    "Groovy": (None, "groovy"),
    "Haskell": (None, "hs"),
    "HTML": ("html", "html"),
    "Java": (None, "java"),
    "JavaScript": ("javascript", "js"),
    "JSX": ("javascript", "jsx"),
    "Julia": (None, "jl"),
    "Kotlin": (None, "kt"),
    "Lisp": (None, "lisp"),
    "Lua": (None, "lua"),
    "Matlab": (None, "m"),
    "Nim": (None, "nim"),
    "NoSQL": ("javascript", "js"),
    "Objective-C": ("c", "m"),
    "OCaml": (None, "ml"),
    "Pascal": (None, "pas"),
    "Perl": (None, "pl"),
    "PHP": (None, "php"),
    "PL/SQL": ("sql-plSQL", "sql"),
    "Powershell": (None, "ps1"),
    "Prolog": (None, "pro"),
    "Python": ("python", "py"),
    "R": ("r", "r"),
    "Racket": (None, "rkt"),
    "Ruby": (None, "rb"),
    "Rust": (None, "rs"),
    "SAS": (None, "sas"),
    "Scala": (None, "scala"),
    "SQL": ("sql", "sql"),
    "Swift": (None, "swift"),
    "SwiftUI": (None, "swift"),
    "TSX": ("typescript", "tsx"),
    "TypeScript": ("typescript", "ts"),
    "VBA": (None, "bas"),
    "Visual Basic .NET": (None, "vb"),
    "Visual Basic 6": (None, "bas"),
    "Vue": ("html", "vue"),
    "Zig": (None, "zig"),
    NATURAL_LANGUAGE: ("markdown", "md"),
}

LANGUAGES: list[str] = sorted(_TABLE, key=str.lower)
PROGRAMMING_LANGUAGES: list[str] = [name for name in LANGUAGES if name != NATURAL_LANGUAGE]


def canonical_language(name: str | None) -> str | None:
    """The list's spelling of ``name`` (case-insensitive, e.g. "python" -> "Python"), or None if unknown."""
    if not name:
        return None
    wanted = name.strip().lower()
    return next((known for known in LANGUAGES if known.lower() == wanted), None)


def highlight_mode(language: str | None) -> str | None:
    """The ``gr.Code`` language for highlighting, or None where Gradio has no mode for it."""
    return _TABLE.get(language or "", (None, "txt"))[0]


def file_extension(language: str | None) -> str:
    return _TABLE.get(language or "", (None, "txt"))[1]
