"""The default ``extensions_info`` provider of the API: extension folders on disk and what git says about them.

Used until the extension system (``modules/extensions.py``) hands the API its own list; both give A1111's
``/sdapi/v1/extensions`` items ``{name, remote, branch, commit_hash, commit_date, version, enabled}``.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from modules.paths import BUILTIN_EXTENSIONS_DIR

log = logging.getLogger(__name__)

GIT_TIMEOUT_S = 5


def _git(folder: Path, *args: str) -> str | None:
    """One line of git output for ``folder``'s own checkout, or None when git is missing or fails."""
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        log.debug("git %s in %s failed: %s", args, folder, e)
        return None
    out = done.stdout.strip()
    return out if done.returncode == 0 and out else None


def git_info(folder: Path) -> dict[str, Any]:
    """remote, branch, commit hash/date and version (short hash) of a folder that is its own git checkout."""
    empty: dict[str, Any] = {"remote": None, "branch": None, "commit_hash": None, "commit_date": None,
                             "version": None}
    if not (folder / ".git").exists():  # a plain folder inside Atelier's own checkout must not report Atelier's
        return empty
    commit = _git(folder, "rev-parse", "HEAD")
    date = _git(folder, "log", "-1", "--format=%ct")
    branch = _git(folder, "rev-parse", "--abbrev-ref", "HEAD")
    return {
        "remote": _git(folder, "config", "--get", "remote.origin.url"),
        "branch": branch if branch != "HEAD" else None,
        "commit_hash": commit,
        "commit_date": int(date) if date and date.isdigit() else None,
        "version": commit[:8] if commit else None,
    }


def extension_folders(folders: Iterable[Path]) -> list[Path]:
    """Sub-folders of each folder (hidden ones skipped), each real folder once, user extensions before built-ins."""
    seen: set[Path] = set()
    found: list[Path] = []
    for root in folders:
        if not root.is_dir():
            continue
        for child in sorted(root.iterdir(), key=lambda p: p.name.lower()):
            if not child.is_dir() or child.name.startswith(".") or child.name == "__pycache__":
                continue
            resolved = child.resolve()
            if resolved not in seen:
                seen.add(resolved)
                found.append(child)
    return found


def scan_extensions(paths: Any, opts: Any, builtin_dir: Path = BUILTIN_EXTENSIONS_DIR) -> list[dict[str, Any]]:
    """A1111's extension items for ``paths.extensions_dir`` and the built-in folder; ``enabled`` from the settings."""
    disabled = set(getattr(opts, "disabled_extensions", None) or [])
    disable_all = str(getattr(opts, "disable_all_extensions", "none") or "none")
    user_dir = getattr(paths, "extensions_dir", None)
    builtin = builtin_dir.resolve() if builtin_dir.is_dir() else None
    items = []
    for folder in extension_folders([p for p in (user_dir, builtin_dir) if p is not None]):
        is_builtin = builtin is not None and folder.resolve().parent == builtin
        enabled = folder.name not in disabled and not (disable_all == "all" or
                                                       (disable_all == "extra" and not is_builtin))
        items.append({"name": folder.name, **git_info(folder), "enabled": enabled})
    return items
