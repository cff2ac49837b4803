"""Logging set up once for the whole process, at the level `--loglevel` (or `ATELIER_LOGLEVEL`) asks for."""

from __future__ import annotations

import logging
import os

_configured = False


def setup_logging(level: str | None = None) -> None:
    """Configure the root logger once; later calls only change the level."""
    global _configured
    name = (level or os.environ.get("ATELIER_LOGLEVEL") or "INFO").upper()
    numeric = getattr(logging, name, logging.INFO)
    if not _configured:
        logging.basicConfig(level=numeric, format="%(asctime)s %(levelname)s [%(name)s] %(message)s",
                            datefmt="%H:%M:%S")
        for noisy in ("httpx", "httpcore", "urllib3", "PIL", "matplotlib", "multipart"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        _configured = True
    logging.getLogger().setLevel(numeric)
