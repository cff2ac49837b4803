"""UI translations (A1111's ``localizations/*.json``): files mapping English UI text to translated text.

A localization is named by its file stem. Files are looked up in the repository's ``localizations/``, the data
folder's ``localizations/`` and each active extension's ``localizations/``; every file of the selected name is
merged in that order, so an extension can add to or override the repository's strings. The page gets the merged
dictionary as ``window.localization`` and ``javascript/localization.js`` applies it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from modules.paths import ROOT

log = logging.getLogger(__name__)

NONE = "None"
"""The ``localization`` setting's value for "no translation"."""

SUBDIR = "localizations"


def localization_dirs(paths: Any, exts: Iterable[Any] = ()) -> list[Path]:
    """Folders that may hold localization files, in merge order: repository, data folder, active extensions."""
    from modules import extensions

    dirs = [ROOT / SUBDIR]
    data_dir = getattr(paths, "data_dir", None) if paths is not None else None
    if data_dir is not None and (Path(data_dir) / SUBDIR).resolve() != dirs[0].resolve():
        dirs.append(Path(data_dir) / SUBDIR)
    dirs += [Path(e.path) / SUBDIR for e in extensions.active(exts)]
    return dirs


def _files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".json")


def list_localizations(dirs: Iterable[Path]) -> dict[str, Path]:
    """Localization name -> its file (the last folder holding that name wins), sorted by name."""
    found: dict[str, Path] = {}
    for folder in dirs:
        for file in _files(Path(folder)):
            found[file.stem] = file
    return dict(sorted(found.items(), key=lambda item: item[0].lower()))


def _read(file: Path) -> dict[str, str]:
    """One file's string pairs; a file that is not a JSON object is skipped with a message naming it."""
    try:
        data = json.loads(file.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        log.error("Localization file %s is skipped: it is not valid JSON (%s).", file, e)
        return {}
    if not isinstance(data, dict):
        log.error("Localization file %s is skipped: it must hold a JSON object of \"English\": \"translation\".",
                  file)
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def load_localization(name: str | None, dirs: Iterable[Path]) -> dict[str, str]:
    """The merged translations of ``name`` from every folder holding ``<name>.json``; empty for "None"/unknown."""
    if not name or name == NONE:
        return {}
    merged: dict[str, str] = {}
    for folder in dirs:
        for file in _files(Path(folder)):
            if file.stem == name:
                merged.update(_read(file))
    return merged


def setting_choices() -> dict[str, list[str]]:
    """``component_args`` of the ``localization`` setting, computed when the Settings tab is built."""
    from modules import extensions, shared

    names = list(list_localizations(localization_dirs(shared.paths, extensions.extensions)))
    return {"choices": [NONE, *names]}


def selected_localization(opts: Any, paths: Any, exts: Iterable[Any]) -> dict[str, str]:
    """The translations the ``localization`` setting selects (empty when none is selected or set up)."""
    name = getattr(opts, "localization", NONE) if opts is not None else NONE
    if not name or name == NONE:
        return {}
    data = load_localization(name, localization_dirs(paths, exts))
    if not data:
        log.warning("Localization %r has no usable translations; the UI stays in English.", name)
    return data
