"""Where Atelier keeps user data: models, outputs, settings, extensions.

A1111 users expect `models/Stable-diffusion`, `models/Lora`, `outputs/txt2img-images` and friends under the install
folder, or under `--data-dir` / `--models-dir`. All folders are resolved once from the flags into a `Paths` value that
is passed to whoever needs it; `ensure()` creates them on first start.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
"""The install folder (the repository root)."""

BUILTIN_EXTENSIONS_DIR = ROOT / "extensions"
DEMO_CHECKPOINT_DIR = ROOT / "models" / "demo"

MODEL_SUBDIRS = ("Stable-diffusion", "VAE", "Lora", "embeddings", "T2I-Adapter", "annotators", "ESRGAN", "VAE-approx")
OUTPUT_SUBDIRS = (
    "txt2img-images", "img2img-images", "extras-images", "txt2img-grids", "img2img-grids", "init-images",
)


@dataclass(frozen=True)
class Paths:
    """Every folder and file location the app uses, resolved from the command-line flags."""

    data_dir: Path
    models_dir: Path
    outputs_dir: Path
    extensions_dir: Path
    settings_file: Path
    ui_config_file: Path
    styles_file: Path
    cache_file: Path
    checkpoint_dirs: tuple[Path, ...]
    vae_dirs: tuple[Path, ...]
    lora_dir: Path
    embeddings_dir: Path

    def model_dir(self, kind: str) -> Path:
        """`models/<kind>`, e.g. `model_dir("T2I-Adapter")`."""
        return self.models_dir / kind

    def output_dir(self, kind: str) -> Path:
        """`outputs/<kind>`, e.g. `output_dir("txt2img-images")`."""
        return self.outputs_dir / kind

    def ensure(self) -> None:
        """Create the folders users drop files into, so the first start shows them where to put models."""
        for sub in MODEL_SUBDIRS:
            self.model_dir(sub).mkdir(parents=True, exist_ok=True)
        for sub in OUTPUT_SUBDIRS:
            self.output_dir(sub).mkdir(parents=True, exist_ok=True)
        for folder in (self.extensions_dir, self.lora_dir, self.embeddings_dir, *self.checkpoint_dirs, *self.vae_dirs):
            folder.mkdir(parents=True, exist_ok=True)


def _resolve(path: str | None, base: Path) -> Path | None:
    if not path:
        return None
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base / p)


def paths_from_args(args: argparse.Namespace, cwd: Path | None = None) -> Paths:
    """Resolve all locations from parsed flags; relative flag values are taken from the current folder."""
    cwd = Path.cwd() if cwd is None else cwd
    data_dir = (_resolve(args.data_dir, cwd) or ROOT).resolve()
    models_dir = (_resolve(args.models_dir, cwd) or data_dir / "models").resolve()
    checkpoint_dirs = [models_dir / "Stable-diffusion"]
    if args.ckpt_dir:
        checkpoint_dirs.append(_resolve(args.ckpt_dir, cwd).resolve())
    vae_dirs = [models_dir / "VAE"]
    if args.vae_dir:
        vae_dirs.append(_resolve(args.vae_dir, cwd).resolve())
    styles = args.styles_file[0] if args.styles_file else None
    return Paths(
        data_dir=data_dir,
        models_dir=models_dir,
        outputs_dir=data_dir / "outputs",
        extensions_dir=data_dir / "extensions" if data_dir != ROOT else BUILTIN_EXTENSIONS_DIR,
        settings_file=_resolve(args.ui_settings_file, cwd) or data_dir / "config.json",
        ui_config_file=_resolve(args.ui_config_file, cwd) or data_dir / "ui-config.json",
        styles_file=_resolve(styles, cwd) or data_dir / "styles.csv",
        cache_file=data_dir / "cache.json",
        checkpoint_dirs=tuple(checkpoint_dirs),
        vae_dirs=tuple(vae_dirs),
        lora_dir=_resolve(args.lora_dir, cwd) or models_dir / "Lora",
        embeddings_dir=_resolve(args.embeddings_dir, cwd) or models_dir / "embeddings",
    )
