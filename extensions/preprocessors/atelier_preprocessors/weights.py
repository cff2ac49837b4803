"""Where annotator weights live, how a file is found and read, and the one detector kept loaded.

Weights are never downloaded: a file is looked up in the annotators folder (``models/annotators`` from
``modules.paths``, or its direct subfolders, for people who keep ``openpose/``, ``midas/``, ...) *before* anything
heavy is imported, so a missing file costs a directory listing and a clear message, not controlnet-aux's 25-s hub
timeout. Files are read with ``torch.load(map_location="cpu", weights_only=True)``: state dicts saved on a GPU load
on a CPU-only machine, and a pickle that is more than tensors is refused.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .errors import BadAnnotatorWeights, MissingAnnotatorWeights

_settings: dict[str, Any] = {"folder": None, "device": None}
_CACHE_SIZE = 1  # detectors are 5 MB to 2.5 GB; keep only the last one used


def configure(annotators_dir: str | Path | None = None, device: Any = None) -> None:
    """Set the folder weights are read from and the device detectors run on (the app's script calls this)."""
    if annotators_dir is not None:
        _settings["folder"] = Path(annotators_dir)
    if device is not None:
        _settings["device"] = device


def annotators_dir(override: str | Path | None = None) -> Path:
    """``override``, else the configured folder, else the app's ``models/annotators`` (``--models-dir`` aware)."""
    if override is not None:
        return Path(override)
    if _settings["folder"] is not None:
        return _settings["folder"]
    from modules import shared

    paths = getattr(shared, "paths", None)
    if paths is not None and hasattr(paths, "model_dir"):
        return Path(paths.model_dir("annotators"))
    from modules.paths import ROOT

    return ROOT / "models" / "annotators"


def device() -> Any:
    """The configured device, else the app's (``shared.device``), else the CPU."""
    if _settings["device"] is not None:
        return _settings["device"]
    from modules import shared

    return getattr(shared, "device", None) or "cpu"


def find_weight(folder: Path, filename: str) -> Path | None:
    """``folder/filename``, else ``folder/<sub>/filename`` (first in name order), else None."""
    direct = folder / filename
    if direct.is_file():
        return direct
    if folder.is_dir():
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            if (sub / filename).is_file():
                return sub / filename
    return None


def require_weights(preprocessor: str, filenames: Iterable[str], folder: Path, alternative: str = ""
                    ) -> dict[str, Path]:
    """Every file's path; the first missing one raises MissingAnnotatorWeights naming it and the folder."""
    found = {}
    for name in filenames:
        path = find_weight(folder, name)
        if path is None:
            raise MissingAnnotatorWeights(preprocessor, name, folder, alternative)
        found[name] = path
    return found


def missing_weights(filenames: Iterable[str], folder: Path) -> list[str]:
    return [name for name in filenames if find_weight(folder, name) is None]


def read_state_dict(path: Path, preprocessor: str, unwrap: tuple[str, ...] = (), strip: str = "module.") -> dict:
    """The tensors of a weight file: wrapper keys (``state_dict``, ``model``) unwrapped, a ``module.`` prefix cut."""
    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated download, not a torch file, a pickle with code in it
        raise BadAnnotatorWeights(f"{path.name} could not be read for {preprocessor}: {type(e).__name__}: {e}",
                                  f"Download {path.name} again into {path.parent}.") from e
    for key in unwrap:
        if isinstance(data, dict) and key in data and isinstance(data[key], dict):
            data = data[key]
    if not isinstance(data, dict):
        raise BadAnnotatorWeights(f"{path.name} holds a {type(data).__name__}, not the weights {preprocessor} needs.",
                                  f"Download {path.name} again into {path.parent}.")
    return {(k[len(strip):] if strip and k.startswith(strip) else k): v for k, v in data.items()}


def load_into(net: Any, state: dict, path: Path, preprocessor: str, tolerated: tuple[str, ...] = ()) -> Any:
    """Load ``state`` into ``net``; keys differing only in names containing ``tolerated`` (buffers the net computes
    itself, e.g. timm's ``relative_position_index``) are accepted, any other mismatch is BadAnnotatorWeights."""
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise BadAnnotatorWeights(f"{path.name} does not fit the {preprocessor} network: {str(e)[:400]}",
                                  f"Is {path.name} the released file? Download it again into {path.parent}.") from e
    wrong = [k for k in (*missing, *unexpected) if not any(t in k for t in tolerated)]
    if wrong:
        raise BadAnnotatorWeights(f"{path.name} does not fit the {preprocessor} network ({len(wrong)} keys differ, "
                                  f"e.g. {', '.join(wrong[:3])}).",
                                  f"Is {path.name} the released file? Download it again into {path.parent}.")
    return net.eval()


class DetectorCache:
    """The last ``size`` loaded detectors by key; loading happens under a lock so two requests load once."""

    def __init__(self, size: int = _CACHE_SIZE) -> None:
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any, load: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            if self.size <= 1:
                self._items.clear()  # free the old detector before loading the next one
            detector = load()
            self._items[key] = detector
            while len(self._items) > self.size:
                self._items.popitem(last=False)
            return detector

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


cache = DetectorCache()
