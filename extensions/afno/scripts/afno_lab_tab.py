"""AFNO lab extension entry: the "AFNO lab" tab and the /afno/v1 routes (the code lives in the afno_lab package)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from afno_lab import integration  # noqa: E402

from modules import script_callbacks  # noqa: E402

script_callbacks.on_ui_tabs(integration.on_ui_tabs)
script_callbacks.on_app_started(integration.on_app_started)
