"""Run enabled extensions' `install.py` at start, as A1111's launcher does (before any extension code is imported).

An installer that fails is reported with the extension's name; start-up goes on without it.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

from modules.options import Options
from modules.paths import BUILTIN_EXTENSIONS_DIR, ROOT, Paths

log = logging.getLogger(__name__)


def enabled_extension_dirs(paths: Paths, opts: Options, args: argparse.Namespace) -> list[Path]:
    """Extension folders that are enabled by settings and flags, built-ins first, each sorted by name."""
    mode = "all" if args.disable_all_extensions else opts.disable_all_extensions
    if mode == "all":
        return []
    disabled = set(opts.disabled_extensions or [])
    found: list[Path] = []
    for base, builtin in ((BUILTIN_EXTENSIONS_DIR, True), (paths.extensions_dir, False)):
        if not base.is_dir() or (not builtin and base == BUILTIN_EXTENSIONS_DIR):
            continue
        if not builtin and (mode == "extra" or args.disable_extra_extensions):
            continue
        for folder in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if folder.name not in disabled and folder not in found:
                found.append(folder)
    return found


def run_installers(paths: Paths, opts: Options, args: argparse.Namespace) -> None:
    if args.skip_install:
        return
    for folder in enabled_extension_dirs(paths, opts, args):
        script = folder / "install.py"
        if not script.is_file():
            continue
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        result = subprocess.run([sys.executable, str(script)], cwd=folder, env=env)
        if result.returncode != 0:
            log.error("Extension %s: install.py failed with exit code %s; continuing without its requirements.",
                      folder.name, result.returncode)
