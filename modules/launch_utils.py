"""What `launch.py` does once it runs inside the project's venv: extension installers, tests, the server.

It also carries A1111's `launch` helpers (`is_installed`, `run`, `run_pip`, `git_clone`) that extension `install.py`
scripts call, with the same signatures.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import shlex
import subprocess
import sys
from pathlib import Path

from modules.paths import ROOT

log = logging.getLogger(__name__)

python = sys.executable
index_url = os.environ.get("INDEX_URL", "")
dir_repos = "repositories"


def is_installed(package: str) -> bool:
    """True when a distribution or importable module of that name is present (A1111 `launch.is_installed`)."""
    try:
        importlib.metadata.distribution(package)
        return True
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        return importlib.util.find_spec(package) is not None
    except (ModuleNotFoundError, ValueError):
        return False


def run(command: str | list[str], desc: str | None = None, errdesc: str | None = None,
        custom_env: dict[str, str] | None = None, live: bool = True) -> str:
    """Run a command; raise RuntimeError with its output when it fails (A1111 `launch.run`)."""
    if desc:
        print(desc, flush=True)
    shell = isinstance(command, str)
    result = subprocess.run(command, shell=shell, env=custom_env or os.environ,
                            stdout=None if live else subprocess.PIPE, stderr=None if live else subprocess.PIPE,
                            text=True)
    if result.returncode != 0:
        message = f"{errdesc or 'Error running command'}.\nCommand: {command}\nError code: {result.returncode}"
        if not live:
            message += f"\nstdout: {result.stdout}\nstderr: {result.stderr}"
        raise RuntimeError(message)
    return "" if live else (result.stdout or "")


def run_pip(command: str, desc: str | None = None, live: bool = True) -> str:
    """`pip <command>` in this venv (A1111 `launch.run_pip`; `command` is e.g. "install foo")."""
    extra = f" --index-url {index_url}" if index_url else ""
    full = f'"{python}" -m pip {command} --prefer-binary --disable-pip-version-check{extra}'
    return run(full, desc=f"Installing {desc}" if desc else None, errdesc=f"Couldn't install {desc or command}",
               live=live)


def git_clone(url: str, dir: str, name: str, commithash: str | None = None) -> None:  # noqa: A002 - A1111 signature
    """Clone a repository once (A1111 `launch.git_clone`); checks out `commithash` when given."""
    if Path(dir).exists():
        return
    run(["git", "clone", "--", url, dir], desc=f"Cloning {name} into {dir}...", errdesc=f"Couldn't clone {name}")
    if commithash:
        run(["git", "-C", dir, "checkout", commithash], errdesc=f"Couldn't checkout {name}'s hash: {commithash}")


def run_tests(pytest_args: list[str]) -> int:
    """Run the whole test suite (or what the arguments select); the exit code is pytest's.

    pytest returns 5 when nothing was collected, which we keep as a failure: a test run that tested nothing
    must not look green.
    """
    os.chdir(ROOT)
    command = [python, "-m", "pytest", *pytest_args]
    print("Running:", " ".join(shlex.quote(c) for c in command), flush=True)
    code = subprocess.run(command).returncode
    if code == 5:
        print("No tests were collected: treating the run as failed.", flush=True)
    return code


def start(argv: list[str]) -> None:
    """Parse flags (with extensions' preload hooks), prepare folders and settings, then serve."""
    from modules import webui

    webui.main(argv)
