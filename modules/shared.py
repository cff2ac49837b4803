"""Compatibility surface for extensions written against A1111 (`from modules import shared`).

Only the start-up code fills these names; core modules take what they need as arguments and never read from here.
"""

from __future__ import annotations

import argparse
from typing import Any

from modules.options import OptionInfo, options_section  # noqa: F401  (A1111: shared.OptionInfo)

cmd_opts: argparse.Namespace | None = None
opts: Any = None
paths: Any = None
device: Any = None
device_choice: Any = None
state: Any = None
sd_model: Any = None
demo: Any = None
job_queue: Any = None
model_cache: Any = None
