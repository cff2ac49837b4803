"""Where the lab's files live and which models it can load: shipped, user-supplied and trained here.

* shipped models: ``extensions/afno/models/`` (git-tracked, small);
* the user's checkpoints (lab files or FourCastNet-style ``.pt``/``.tar``): ``<models>/AFNO/``;
* datasets, training runs and rendered plots: ``<outputs>/afno/`` (git-ignored, served to the UI).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from afno_lab.checkpoint import TORCH_SUFFIXES, CheckpointError, load_forecaster
from afno_lab.forecaster import Forecaster

EXTENSION_DIR = Path(__file__).resolve().parents[1]
SHIPPED_DIR = EXTENSION_DIR / "models"
MODEL_SUFFIXES = (".safetensors", *TORCH_SUFFIXES)


@dataclass(frozen=True)
class LabPaths:
    shipped: Path
    user_models: Path
    work: Path

    @classmethod
    def from_app_paths(cls, paths: object) -> LabPaths:
        """From Atelier's ``Paths`` (``models_dir``, ``outputs_dir``)."""
        return cls(SHIPPED_DIR, Path(paths.models_dir) / "AFNO", Path(paths.outputs_dir) / "afno")  # type: ignore[attr-defined]

    @property
    def datasets(self) -> Path:
        return self.work / "datasets"

    @property
    def runs(self) -> Path:
        return self.work / "runs"

    @property
    def renders(self) -> Path:
        return self.work / "renders"


class ModelStore:
    """Lists model files by a short name and keeps the last loaded forecaster (loading is the slow part)."""

    def __init__(self, paths: LabPaths) -> None:
        self.paths = paths
        self._lock = threading.Lock()
        self._cached: tuple[Path, float, Forecaster, dict] | None = None

    def available(self) -> dict[str, Path]:
        """Name → file: shipped first, then the user's folder, then runs (``run/<name>``), each sorted."""
        found: dict[str, Path] = {}
        for folder in (self.paths.shipped, self.paths.user_models):
            if folder.is_dir():
                for f in sorted(folder.iterdir()):
                    if f.is_file() and f.suffix in MODEL_SUFFIXES:
                        found.setdefault(f.name, f)
        if self.paths.runs.is_dir():
            for run in sorted(self.paths.runs.iterdir()):
                model = run / "model.safetensors"
                if model.is_file():
                    found[f"run/{run.name}"] = model
        return found

    def default_name(self) -> str | None:
        names = list(self.available())
        return names[0] if names else None

    def resolve(self, name: str | None) -> Path:
        models = self.available()
        if not models:
            raise CheckpointError(f"no AFNO models found; put one in {self.paths.user_models} or train one")
        if not name:
            return next(iter(models.values()))
        if name not in models:
            raise CheckpointError(f"unknown model {name!r}; available: {', '.join(models)}")
        return models[name]

    def load(self, name: str | None) -> tuple[Forecaster, dict, Path]:
        """The forecaster for ``name`` (default: the first available), reloaded when its file changed."""
        path = self.resolve(name)
        mtime = path.stat().st_mtime
        with self._lock:
            if self._cached and self._cached[0] == path and self._cached[1] == mtime:
                return self._cached[2], self._cached[3], path
            forecaster, meta = load_forecaster(path)
            self._cached = (path, mtime, forecaster, meta)
            return forecaster, meta, path
