"""T2I-Adapter for Atelier: adapter models, loading, UNet injection and training (see ``api``)."""

from .api import *  # noqa: F403
from .api import __all__  # noqa: F401
