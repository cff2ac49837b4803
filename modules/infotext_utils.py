"""A1111's name for the infotext module: `modules.infotext_utils` *is* `modules.infotext` (one module object).

Extensions import, call and sometimes wrap these functions by A1111's names; aliasing the module (not copying names)
keeps a wrapper installed through either name visible to every caller. The older name
`modules.generation_parameters_copypaste` is registered here too, as A1111 does.
"""

from __future__ import annotations

import sys

from modules import infotext

sys.modules[__name__] = infotext
sys.modules["modules.generation_parameters_copypaste"] = infotext
