"""Run a short program in a language this machine has a runtime for, in a throw-away folder, with a time limit,
an output cap and a bare environment (no API keys or other secrets are passed on).

Supported: Python (python3), JavaScript (node), Bash (bash), C (gcc) and C++ (g++).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# language -> (source file name, runtime executables needed)
RUNTIMES: dict[str, tuple[str, tuple[str, ...]]] = {
    "Python": ("main.py", ("python3",)),
    "JavaScript": ("main.js", ("node",)),
    "Bash": ("main.sh", ("bash",)),
    "C": ("main.c", ("gcc",)),
    "C++": ("main.cpp", ("g++",)),
}
OUTPUT_CAP = 64 * 1024


@dataclass
class RunResult:
    stdout: str
    stderr: str
    returncode: int | None
    timed_out: bool = False
    truncated: bool = False
    failed_to_build: bool = False

    def summary(self) -> str:
        if self.failed_to_build:
            return "did not compile"
        if self.timed_out:
            return "timed out"
        return f"exit code {self.returncode}" + (" (output cut at the cap)" if self.truncated else "")


def runtime_missing(language: str) -> str | None:
    """Why ``language`` cannot be run here, or None when it can."""
    if language not in RUNTIMES:
        return f"running {language} is not supported (only {', '.join(RUNTIMES)})"
    missing = [exe for exe in RUNTIMES[language][1] if _find(exe) is None]
    return f"{language} needs {', '.join(missing)}, which is not installed" if missing else None


def _find(executable: str) -> str | None:
    if executable == "python3":
        return shutil.which("python3") or sys.executable
    return shutil.which(executable)


def _limited(command: list[str], cap: int, timeout_s: float) -> list[str]:
    """The command under ``ulimit``: files (its output) stop growing past about the cap, CPU time past the limit.

    A shell does this rather than ``preexec_fn``, which is unsafe in a server with threads."""
    shell = shutil.which("sh") if os.name == "posix" else None
    if shell is None:
        return command
    blocks = cap // 512 + 2  # ulimit -f counts 512-byte blocks in POSIX sh (1024 in bash): at least the cap
    script = f'ulimit -f {blocks} 2>/dev/null; ulimit -t {int(timeout_s) + 1} 2>/dev/null; exec "$@"'
    return [shell, "-c", script, "sh", *command]


def _bare_env(folder: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(folder), "TMPDIR": str(folder),
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONIOENCODING": "utf-8", "PYTHONDONTWRITEBYTECODE": "1"}


def _execute(command: list[str], folder: Path, stdin: str, timeout_s: float, cap: int) -> RunResult:
    out_path, err_path = folder / "stdout.txt", folder / "stderr.txt"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(_limited(command, cap, timeout_s), cwd=folder, stdin=subprocess.PIPE, stdout=out,
                                stderr=err, env=_bare_env(folder), start_new_session=True)
        timed_out = False
        try:
            proc.communicate(stdin.encode(), timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        except BrokenPipeError:  # the program exited without reading its input
            proc.wait(timeout_s)
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    raw_out, raw_err = out_path.read_bytes(), err_path.read_bytes()
    truncated = len(raw_out) > cap or len(raw_err) > cap
    return RunResult(raw_out[:cap].decode("utf-8", "replace"), raw_err[:cap].decode("utf-8", "replace"),
                     None if timed_out else proc.returncode, timed_out=timed_out, truncated=truncated)


def run_program(language: str, code: str, stdin: str = "", timeout_s: float = 10.0, cap: int = OUTPUT_CAP) -> RunResult:
    """Compile if needed, then run ``code`` with ``stdin``; the caller checks :func:`runtime_missing` first."""
    filename, executables = RUNTIMES[language]
    with tempfile.TemporaryDirectory(prefix="code-translator-") as tmp:
        folder = Path(tmp)
        (folder / filename).write_text(code, encoding="utf-8")
        runtime = _find(executables[0]) or executables[0]
        if language in ("C", "C++"):
            build = _execute([runtime, "-O0", "-o", "program", filename, "-lm"], folder, "", max(timeout_s, 30), cap)
            if build.returncode != 0:
                build.failed_to_build = True
                return build
            return _execute([str(folder / "program")], folder, stdin, timeout_s, cap)
        return _execute([runtime, filename], folder, stdin, timeout_s, cap)
