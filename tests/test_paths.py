"""Tests for modules/paths.py: folders resolved from flags and created on first start."""

from __future__ import annotations

from pathlib import Path

from modules import cmd_args
from modules.paths import MODEL_SUBDIRS, ROOT, paths_from_args


def test_defaults_live_in_the_install_folder():
    paths = paths_from_args(cmd_args.parse_args([], environ={}))
    assert paths.data_dir == ROOT and paths.models_dir == ROOT / "models"
    assert paths.settings_file == ROOT / "config.json"
    assert paths.checkpoint_dirs == (ROOT / "models" / "Stable-diffusion",)
    assert paths.lora_dir == ROOT / "models" / "Lora"


def test_data_and_models_dirs_and_extra_folders(tmp_path: Path):
    args = cmd_args.parse_args(["--data-dir", str(tmp_path / "data"), "--models-dir", "m", "--ckpt-dir",
                                str(tmp_path / "ck"), "--lora-dir", str(tmp_path / "lora")], environ={})
    paths = paths_from_args(args, cwd=tmp_path)
    assert paths.data_dir == tmp_path / "data"
    assert paths.models_dir == tmp_path / "m"
    assert paths.checkpoint_dirs == (tmp_path / "m" / "Stable-diffusion", tmp_path / "ck")
    assert paths.lora_dir == tmp_path / "lora"
    assert paths.settings_file == tmp_path / "data" / "config.json"
    assert paths.extensions_dir == tmp_path / "data" / "extensions"


def test_ensure_creates_the_model_and_output_folders(tmp_path: Path):
    paths = paths_from_args(cmd_args.parse_args(["--data-dir", str(tmp_path)], environ={}))
    paths.ensure()
    for sub in MODEL_SUBDIRS:
        assert (tmp_path / "models" / sub).is_dir()
    assert (tmp_path / "outputs" / "txt2img-images").is_dir()
    assert (tmp_path / "extensions").is_dir()
