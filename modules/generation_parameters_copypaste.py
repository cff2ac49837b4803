"""A1111's pre-1.8 name for the infotext module; importing it gives `modules.infotext` itself."""

from __future__ import annotations

import sys

from modules import infotext

sys.modules[__name__] = infotext
