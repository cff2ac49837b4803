"""Start Atelier as its own process (``launch_utils.start``, as ``launch.py`` does) for tests that need a fresh app:
preload flags, extensions loaded at start, settings read at start. Yields once the "ready" line is printed."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

START = "import sys; from modules import launch_utils; launch_utils.start(sys.argv[1:])"
START_TIMEOUT_S = 240


@dataclass
class ServerProcess:
    url: str  # without a trailing slash
    data_dir: Path
    proc: subprocess.Popen
    output: list[str] = field(default_factory=list)

    def log(self) -> str:
        return "".join(self.output)


@contextlib.contextmanager
def server_process(data_dir: Path, *flags: str) -> Iterator[ServerProcess]:
    """``--data-dir data_dir --port <free> *flags`` in a child process, stopped when the block ends."""
    port = free_port()
    env = {**os.environ, "COMMANDLINE_ARGS": "", "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    argv = ["--data-dir", str(data_dir), "--port", str(port), *flags]
    proc = subprocess.Popen([sys.executable, "-c", START, *argv], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    server = ServerProcess(f"http://127.0.0.1:{port}", data_dir, proc)
    ready = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            server.output.append(line)
            if "ready:" in line:
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.time() + START_TIMEOUT_S
    while not ready.is_set() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    try:
        if not ready.is_set():
            pytest.fail("the server did not start:\n" + server.log()[-5000:])
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
