"""The HTTP server loop with A1111's "Apply and restart UI": uvicorn runs in a thread; when something sets
``state.server_command = "restart"`` the loop stops it, builds a fresh app (extensions listed again, scripts and
callbacks reloaded) and serves that on the same host and port. The page polls ``/internal/ping`` until the new
build answers, then reloads itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN_S = 3
"""Open streams (the page's event stream) are cut after this long when the server stops for a restart."""
SETTLE_S = 0.5
"""Pause before stopping, so the answer of the request that asked for the restart reaches the page."""


class ServerLoop:
    """One uvicorn server at a time on ``host:port``; ``restart`` swaps in the app ``rebuild`` returns."""

    def __init__(self, app: Any, host: str, port: int, rebuild: Callable[[], Any], **uvicorn_options: Any) -> None:
        self.app, self.host, self.port = app, host, port
        self.rebuild = rebuild
        self.options = uvicorn_options
        self.server: Any = None
        self.thread: threading.Thread | None = None
        self.restarts = 0

    def start(self, start_timeout: float = 120) -> bool:
        """Serve ``self.app``; True once it accepts connections, False when uvicorn gave up (port taken...)."""
        import uvicorn

        config = uvicorn.Config(self.app, host=self.host, port=self.port, log_level="warning",
                                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, **self.options)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="http-server", daemon=True)
        self.thread.start()
        deadline = time.time() + start_timeout
        while not self.server.started and self.thread.is_alive() and time.time() < deadline:
            time.sleep(0.05)
        return bool(self.server.started)

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def stop(self, timeout: float = 15) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout)

    def restart(self) -> bool:
        """Stop, rebuild, serve again on the same port. A rebuild that fails keeps the old app (logged)."""
        time.sleep(SETTLE_S)
        self.stop()
        try:
            self.app = self.rebuild()
        except Exception:
            log.exception("Reloading the UI failed; serving the previous one again.")
        self.restarts += 1
        started = self.start()
        if started:
            log.info("Atelier restarted on %s:%s.", self.host, self.port)
        return started

    def serve_until_stopped(self, state: Any, poll_s: float = 0.25) -> None:
        """Watch ``state.server_command`` while the server runs: "restart" rebuilds, "stop" ends the loop."""
        while self.running:
            command = getattr(state, "server_command", None)
            if command == "restart":
                state.server_command = None
                if not self.restart():
                    log.error("The server did not come back after the restart.")
                    return
            elif command == "stop":
                state.server_command = None
                self.stop()
                return
            time.sleep(poll_s)
