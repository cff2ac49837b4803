"""Atelier's entry point: `python launch.py` starts the UI; `python launch.py --run-tests` runs the tests.

Outside the project's virtual environment this file uses only the standard library: it creates `venv/`, installs the
requirements there (skipped when the stamp of the requirements files' hash matches; `--skip-install` skips it,
`--reinstall` forces it) and re-executes itself inside the venv. Inside, it hands over to `modules.launch_utils`.

Extension `install.py` scripts written for A1111 do `import launch` and call `launch.is_installed`,
`launch.run_pip`, `launch.run` and `launch.git_clone`; those names are served from `modules.launch_utils`.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / "venv"
RUNTIME_REQUIREMENTS = ROOT / "requirements.txt"
TEST_REQUIREMENTS = ROOT / "requirements-test.txt"
# Test oracles whose declared dependencies are heavy and unused (k-diffusion): installed with --no-deps.
TEST_REQUIREMENTS_NO_DEPS = ROOT / "requirements-test-nodeps.txt"
SUPPORTED_PYTHON = ((3, 10), (3, 12))
COMPAT_NAMES = ("is_installed", "run_pip", "run", "git_clone", "python", "index_url", "dir_repos")


def __getattr__(name: str):
    """Serve A1111's `launch.*` helpers to extension install scripts without importing them at start-up."""
    if name in COMPAT_NAMES:
        from modules import launch_utils

        return getattr(launch_utils, name)
    raise AttributeError(name)


def all_args(argv: list[str]) -> list[str]:
    """argv plus COMMANDLINE_ARGS, as the flag parser will see them."""
    return [*argv, *shlex.split(os.environ.get("COMMANDLINE_ARGS", ""))]


def in_project_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def requirement_files(top: Path) -> list[Path]:
    """The requirements file and every file it includes with `-r`, so a change in any of them reinstalls."""
    files, queue = [], [top]
    while queue:
        path = queue.pop()
        if path in files or not path.exists():
            continue
        files.append(path)
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] in ("-r", "--requirement"):
                queue.append((path.parent / parts[1]).resolve())
    return files


def requirements_stamp(top: Path) -> str:
    digest = hashlib.sha256(f"python {sys.version_info[:2]}".encode())
    for path in sorted(requirement_files(top)):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def stamp_file(top: Path) -> Path:
    return VENV / f".atelier-stamp-{top.stem}"


def ensure_requirements(top: Path, *, force: bool, no_deps: bool = False) -> None:
    """pip install the requirements into the venv unless the stamp says they are already there."""
    stamp = requirements_stamp(top)
    marker = stamp_file(top)
    if not force and marker.exists() and marker.read_text().strip() == stamp:
        return
    print(f"Installing {top.name} into {VENV.name}/ (the first time takes a few minutes)...", flush=True)
    command = [str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check", "-q", "-r", str(top)]
    if no_deps:
        command.append("--no-deps")
    result = subprocess.run(command, cwd=ROOT)
    if result.returncode != 0:
        sys.exit(f"Installing {top.name} failed (pip exit code {result.returncode}); see the messages above.")
    marker.write_text(stamp + "\n")


def install_requirements(args: list[str], *, force: bool) -> None:
    """Runtime requirements, or for `--run-tests` the test requirements (which include them) and test oracles."""
    if "--run-tests" not in args:
        ensure_requirements(RUNTIME_REQUIREMENTS, force=force)
        return
    ensure_requirements(TEST_REQUIREMENTS, force=force)
    if TEST_REQUIREMENTS_NO_DEPS.exists():
        ensure_requirements(TEST_REQUIREMENTS_NO_DEPS, force=force, no_deps=True)


def prepare_venv(args: list[str]) -> None:
    """Create the venv and install what this run needs, then replace this process with the venv's Python."""
    if sys.version_info[:2] < SUPPORTED_PYTHON[0] or sys.version_info[:2] > SUPPORTED_PYTHON[1]:
        if "--skip-python-version-check" not in args:
            sys.exit(f"Atelier needs Python 3.10 to 3.12; this is {sys.version.split()[0]}. "
                     "Use --skip-python-version-check to try anyway.")
    if not venv_python().exists():
        print(f"Creating the virtual environment in {VENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    if "--skip-install" not in args:
        install_requirements(args, force="--reinstall" in args or "--reinstall-torch" in args)
    os.execv(str(venv_python()), [str(venv_python()), str(Path(__file__).resolve()), *sys.argv[1:]])


def split_test_args(argv: list[str]) -> tuple[list[str], list[str]] | None:
    """`--run-tests` and everything after it are pytest's; launcher flags before it stay ours."""
    if "--run-tests" not in argv:
        return None
    index = argv.index("--run-tests")
    return argv[:index], argv[index + 1:]


def main() -> None:
    argv = sys.argv[1:]
    args = all_args(argv)
    if not in_project_venv() and "--skip-prepare-environment" not in args:
        prepare_venv(args)
        return
    if "--skip-install" not in args and in_project_venv():
        install_requirements(args, force=False)

    sys.path.insert(0, str(ROOT))
    from modules import launch_utils

    tests = split_test_args(argv)
    if tests is not None:
        sys.exit(launch_utils.run_tests(tests[1]))
    launch_utils.start(argv)


if __name__ == "__main__":
    main()
