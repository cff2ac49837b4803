"""The banner that tells a user with no checkpoint, or only the built-in demo model, where real checkpoints go."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from modules.paths import DEMO_CHECKPOINT_DIR
from modules.ui import model_notice_html


def context(tmp_path: Path, *files: Path) -> SimpleNamespace:
    checkpoints = {f.name: SimpleNamespace(filename=str(f)) for f in files}
    return SimpleNamespace(paths=SimpleNamespace(checkpoint_dirs=[tmp_path / "Stable-diffusion"]),
                           checkpoints=checkpoints)


def test_no_checkpoint_says_where_to_put_one(tmp_path: Path) -> None:
    html = model_notice_html(context(tmp_path))
    assert "No checkpoint found" in html and str(tmp_path / "Stable-diffusion") in html


def test_only_the_demo_model_gets_a_banner_and_a_real_checkpoint_none(tmp_path: Path) -> None:
    demo = DEMO_CHECKPOINT_DIR / "atelier-demo.safetensors"
    html = model_notice_html(context(tmp_path, demo))
    assert "built-in demo model" in html and "Stable-diffusion" in html
    assert model_notice_html(context(tmp_path, demo, tmp_path / "Stable-diffusion" / "real.safetensors")) == ""
