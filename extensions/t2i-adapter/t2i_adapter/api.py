"""The public API of the T2I-Adapter core, used by the extension's scripts, UI and training.

* :func:`list_adapter_files` / :func:`load_adapter` find and load released, repacked and diffusers-format adapters;
  an unusable file raises :class:`AdapterFormatError` naming it.
* :func:`compute_features` runs an adapter once on a condition picture (or CLIP tokens for style).
* :func:`unet_hooks_for` turns the units' features into ``UNetHooks`` for ``p.unet_hooks``.
"""

from __future__ import annotations

from .adapter_types import AdapterFeatures, AdapterFormatError, LoadedAdapter
from .features import compute_features, prepare_condition
from .injection import feature_channels, injection_points, unet_hooks_for
from .loading import guess_condition, list_adapter_files, load_adapter, read_adapter_state_dict

__all__ = [
    "AdapterFeatures",
    "AdapterFormatError",
    "LoadedAdapter",
    "compute_features",
    "feature_channels",
    "guess_condition",
    "injection_points",
    "list_adapter_files",
    "load_adapter",
    "prepare_condition",
    "read_adapter_state_dict",
    "unet_hooks_for",
]
