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
from modules.paths import ROOT, Paths

log = logging.getLogger(__name__)


def enabled_extension_dirs(paths: Paths, opts: Options, args: argparse.Namespace) -> list[Path]:
    """Folders of the extensions that load (settings, flags and ``Requires`` honoured), in load order."""
    from modules import extensions

    return [Path(e.path) for e in extensions.active(extensions.list_extensions(paths, opts, args))]


def run_install_script(folder: Path) -> bool:
    """Run ``<folder>/install.py`` as A1111's launcher does (repo root on PYTHONPATH, so ``import launch`` works).

    Returns False when it failed; the failure is logged with the extension's folder name. No script is success.
    """
    script = Path(folder) / "install.py"
    if not script.is_file():
        return True
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, str(script)], cwd=folder, env=env)
    if result.returncode != 0:
        log.error("Extension %s: install.py failed with exit code %s; continuing without its requirements.",
                  Path(folder).name, result.returncode)
        return False
    return True


def run_installers(paths: Paths, opts: Options, args: argparse.Namespace) -> None:
    if args.skip_install:
        return
    for folder in enabled_extension_dirs(paths, opts, args):
        run_install_script(folder)
