"""``modules.shared_state.State`` (A1111's ``shared.state``) and the order of the script hooks ``process_images``
calls (A1111's ``ScriptRunner`` pipeline order)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from PIL import Image

from modules.processing import StableDiffusionProcessingTxt2Img, process_images
from modules.shared_state import State

if TYPE_CHECKING:
    from tests.pipeline_fixtures import PipelineEnv

pytest_plugins = ["tests.pipeline_fixtures"]


def test_state_lifecycle_and_progress() -> None:
    state = State()
    assert state.progress() == 0.0
    state.begin("txt2img")
    assert state.job == "txt2img" and state.job_count == -1 and len(state.job_timestamp) == 14
    state.job_count, state.sampling_steps, state.sampling_step = 2, 10, 5
    assert abs(state.progress() - (0.01 + 0.25)) < 1e-9
    state.nextjob()
    assert state.job_no == 1 and state.sampling_step == 0
    state.interrupt()
    state.skip()
    assert state.dict() == {"skipped": True, "interrupted": True, "stopping_generation": False, "job": "txt2img",
                            "job_count": 2, "job_timestamp": state.job_timestamp, "job_no": 1, "sampling_step": 0,
                            "sampling_steps": 10}
    state.begin()
    assert not state.interrupted and not state.skipped
    state.end()
    assert state.job == "" and state.job_count == 0


def test_state_preview_decoder_failure_is_harmless() -> None:
    state = State()
    state.preview_decoder = lambda latent: 1 / 0
    state.set_current_latent("latent", 3)
    assert state.current_latent == "latent" and state.current_image is None and state.current_image_sampling_step == 3


def test_state_readers_in_other_threads() -> None:
    state = State()
    state.begin("job")
    seen: list[dict] = []
    readers = [threading.Thread(target=lambda: seen.append(state.dict())) for _ in range(4)]
    for reader in readers:
        reader.start()
    for _ in range(100):
        state.nextjob()
    for reader in readers:
        reader.join()
    assert len(seen) == 4 and state.job_no == 100


class RecordingRunner:
    """Records A1111 ScriptRunner hook calls; changes the picture in ``postprocess_image``."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        def hook(p: Any, *args: Any, **kwargs: Any) -> None:
            self.calls.append(name)
            if name == "postprocess_image":
                args[0].image = Image.new("RGB", args[0].image.size, "red")

        return hook


def test_script_hooks_run_in_a1111_order(pipeline_env: PipelineEnv, tiny_sd1: Any) -> None:
    p = pipeline_env.apply(StableDiffusionProcessingTxt2Img(
        sd_model=tiny_sd1, prompt="a cube", seed=1, steps=2, width=32, height=32, do_not_save_samples=True))
    runner = RecordingRunner()
    p.scripts = runner
    res = process_images(p)
    assert runner.calls == [
        "before_process", "process", "before_process_batch", "after_extra_networks_activate", "process_batch",
        "process_before_every_sampling", "post_sample", "postprocess_batch", "postprocess_batch_list",
        "postprocess_image", "postprocess_maskoverlay", "postprocess_image_after_composite", "postprocess",
    ]
    assert res.images[0].getpixel((0, 0)) == (255, 0, 0)
