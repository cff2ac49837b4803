"""The AFNO lab tab: it builds, and its handlers (called as Gradio calls them) do the work on the shared queue and
answer bad input with a visible message."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from afno_lab.checkpoint import save_model  # noqa: E402
from afno_lab.forecaster import StepperInfo  # noqa: E402
from afno_lab.lab_jobs import RunRegistry  # noqa: E402
from afno_lab.model import AFNOConfig, AFNONet  # noqa: E402
from afno_lab.store import LabPaths  # noqa: E402
from afno_lab.ui import TRAIN_FIELDS, LabUi, build_tab  # noqa: E402

from modules.jobs import JobQueue  # noqa: E402
from modules.shared_state import State  # noqa: E402

TRAIN = {"name": "ui-run", "n_samples": 3, "t_end": 2, "n_test": 1, "steps": 3, "batch_size": 2, "lr": 1e-3,
         "history": 1, "unroll": 1, "patch_size": 4, "embed_dim": 16, "depth": 1, "precision": "auto", "device": "cpu",
         "max_minutes": 0, "resume": False}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabUi]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("afno_ui")
    paths = LabPaths(root / "shipped", root / "models" / "AFNO", root / "outputs" / "afno")
    torch.manual_seed(0)
    net = AFNONet(AFNOConfig(img_size=(16, 16), patch_size=(4, 4), embed_dim=16, depth=1, num_blocks=4))
    save_model(paths.shipped / "tiny.safetensors", net, StepperInfo(scale=0.5), {"one_step_rel_l2": 0.123})
    queue = JobQueue(State())
    yield LabUi(queue, paths, RunRegistry())
    queue.shutdown(10)
    torch.set_num_threads(threads)


def test_tab_builds_with_its_controls(lab: LabUi) -> None:
    tab = build_tab(lab)
    assert isinstance(tab, gr.Blocks)
    ids = {getattr(c, "elem_id", None) for c in tab.blocks.values()}
    assert {"afno_model", "afno_rollout_button", "afno_grid", "afno_gif", "afno_train_start"} <= ids
    assert "one-step 0.123" in lab.model_info("tiny.safetensors")
    assert "Error" in lab.model_info("missing.safetensors")


def test_rollout_shows_heat_maps_gif_and_error_curve(lab: LabUi) -> None:
    grid, gif, curve, message = lab.rollout("tiny.safetensors", 2, 1, 4, True, None)
    assert isinstance(grid, Image.Image) and isinstance(curve, Image.Image)
    assert "Relative L2 at lead 1" in message
    animation = Image.open(gif)
    assert animation.format == "GIF" and animation.n_frames == 4
    assert Path(gif).parent == lab.paths.renders


def test_rollout_from_an_uploaded_field_and_bad_uploads(lab: LabUi, tmp_path: Path) -> None:
    good = tmp_path / "field.npy"
    np.save(good, np.random.default_rng(0).normal(size=(16, 16)).astype(np.float32))
    grid, gif, curve, message = lab.rollout(None, 0, 0, 2, False, str(good))
    assert grid is not None and curve is None and "No solver comparison" in message
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((8, 8), dtype=np.float32))
    assert "takes (16, 16)" in lab.rollout(None, 0, 0, 2, False, str(wrong))[3]
    text = tmp_path / "field.txt"
    text.write_text("1 2 3")
    assert ".npy" in lab.rollout(None, 0, 0, 2, False, str(text))[3]
    pickled = tmp_path / "obj.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert "Error" in lab.rollout(None, 0, 0, 2, False, str(pickled))[3]


def test_dataset_generation_reports_progress_then_a_preview(lab: LabUi) -> None:
    updates = list(lab.generate_dataset(2, 3, 16, 1e-3, 0))
    assert any(text.startswith("Generating") for _, text in updates[:-1])
    preview, text = updates[-1]
    assert isinstance(preview, Image.Image) and "(2, 4, 16, 16)" in text and "ns_v0.001_n16_N2" in text
    bad = list(lab.generate_dataset(2, 3, 15, 1e-3, 0))
    assert len(bad) == 1 and "even number" in bad[0][1]


def test_training_from_the_tab_with_live_loss_and_stop(lab: LabUi) -> None:
    task_id, message = lab.start_training(*[TRAIN[k] for k in TRAIN_FIELDS])
    assert task_id.startswith("task(afno-") and "Queued" in message
    deadline = time.time() + 120
    shown = ""
    curve = None
    while time.time() < deadline:
        update, status, errors, shown = lab.poll(task_id, shown)
        if isinstance(update, Image.Image):
            curve = update
        if "**done**" in status:
            break
        time.sleep(0.2)
    assert "**done**" in status and shown == f"{task_id}:3:2" and isinstance(curve, Image.Image)
    assert isinstance(errors, Image.Image)
    assert lab.poll(task_id, shown)[0] == gr.update()  # nothing new: no redraw
    assert "run/ui-run" in lab.model_choices()
    assert "already ended" in lab.stop_training(task_id)
    bad_id, bad = lab.start_training(*[{**TRAIN, "embed_dim": 18}[k] for k in TRAIN_FIELDS])
    assert bad_id == "" and "divisible" in bad


def test_checkpoint_import_and_save(lab: LabUi, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"nope")
    message, _ = lab.import_checkpoint(str(junk))
    assert "could not be read" in message and not (lab.paths.user_models / "junk.pt").exists()
    net = AFNONet(AFNOConfig(img_size=(16, 16), patch_size=(4, 4), embed_dim=8, depth=1, num_blocks=2))
    good = tmp_path / "fcn_style.pth"
    torch.save({"model_state": {"module." + k: v for k, v in net.state_dict().items()}}, good)
    message, update = lab.import_checkpoint(str(good))
    assert "Imported fcn_style.pth" in message and (lab.paths.user_models / "fcn_style.pth").is_file()
    assert update["value"] == "fcn_style.pth"
    message, _ = lab.save_model_as("tiny.safetensors", "copy")
    assert (lab.paths.user_models / "copy.safetensors").is_file()
    assert "already exists" in lab.save_model_as("tiny.safetensors", "copy")[0]
    assert "file name" in lab.save_model_as("tiny.safetensors", "../x")[0]
