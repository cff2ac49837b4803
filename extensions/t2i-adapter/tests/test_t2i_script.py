"""The T2I-Adapter script in the real pipeline (tiny random SD1 checkpoint, tiny random adapter in a temporary
``models/T2I-Adapter``): a unit changes the picture, weight 0 leaves it unchanged, the guidance window gates the
UNet hooks per denoiser call, features are computed once per job and size, infotext entries are written, hooks are
cleared afterwards, and bad units are refused with messages that name the problem."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from modules import cmd_args, extensions, script_callbacks, scripts, shared
from modules.errors import InvalidRequest
from modules.infotext import parse_generation_parameters
from modules.paths import paths_from_args
from modules.processing import StableDiffusionProcessingTxt2Img, process_images

EXTENSION = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(EXTENSION))

from t2i_adapter import ui_runtime  # noqa: E402
from t2i_adapter.adapter_full import Adapter, FullAdapterConfig  # noqa: E402
from t2i_adapter.coadapter_fuser import CoAdapterFuser, FuserConfig  # noqa: E402
from t2i_adapter.infotext import units_from_params  # noqa: E402

pytest_plugins = ["tests.pipeline_fixtures"]

ADAPTER = "tiny-edge"


def write_tiny_adapter(folder: Path, name: str = ADAPTER, *, channels: tuple[int, ...] = (32, 64),
                       unshuffle: int = 2, cond_channels: int = 1, seed: int = 0) -> Path:
    """A random full adapter whose features fit the tiny SD1 UNet (levels 32/64 channels, VAE factor 2)."""
    torch.manual_seed(seed)
    module = Adapter(FullAdapterConfig(channels=channels, nums_rb=1, cond_channels=cond_channels,
                                       unshuffle=unshuffle))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.pth"
    torch.save({k: v * 4 for k, v in module.state_dict().items()}, path)  # larger weights: a clearly visible effect
    return path


def square_picture(size: int = 32) -> np.ndarray:
    picture = np.zeros((size, size, 3), np.uint8)
    picture[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 255
    return picture


@pytest.fixture
def data_paths(tmp_path: Path) -> Any:
    paths = paths_from_args(cmd_args.parse_args(["--data-dir", str(tmp_path / "data")], environ={}))
    write_tiny_adapter(paths.model_dir("T2I-Adapter"))
    return paths


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[scripts.ScriptRunner]:
    """Only this extension's script loaded (the preprocessors extension with it), module state restored."""
    script_callbacks.clear_callbacks()
    for name in ("scripts_data", "load_errors", "scripts_txt2img", "scripts_img2img", "current_basedir"):
        monkeypatch.setattr(scripts, name, getattr(scripts, name))
    monkeypatch.setattr(scripts, "script_extension", dict(scripts.script_extension))
    monkeypatch.setattr(shared, "paths", None)
    ext = extensions.Extension("t2i-adapter", EXTENSION, is_builtin=True)
    scripts.load_scripts([ext], builtin_scripts_dir=tmp_path / "no-scripts")
    assert not scripts.load_errors, scripts.load_errors
    ui_runtime.clear_adapter_cache()
    yield scripts.scripts_txt2img
    script_callbacks.clear_callbacks()


def job(env: Any, model: Any, paths: Any, runner: scripts.ScriptRunner, units: list[dict[str, Any]] | None,
        **fields: Any) -> StableDiffusionProcessingTxt2Img:
    values = {"prompt": "a red cube", "negative_prompt": "blurry", "seed": 5, "steps": 4, "width": 32, "height": 32,
              "cfg_scale": 5.0, "sampler_name": "Euler", "do_not_save_samples": True, "do_not_save_grid": True}
    p = env.apply(StableDiffusionProcessingTxt2Img(sd_model=model, **{**values, **fields}))
    p.paths = paths
    always = {"T2I-Adapter": {"args": units}} if units is not None else None
    _, args = scripts.build_script_args(runner, alwayson_scripts=always)
    p.callbacks = script_callbacks
    p.scripts = runner
    p.script_args = args  # setup() runs here, as for a UI or API request
    return p


def unit(**fields: Any) -> dict[str, Any]:
    return {"image": square_picture(), "module": "none", "model": ADAPTER, **fields}


def pixels(processed: Any) -> np.ndarray:
    return np.asarray(processed.images[0].convert("RGB")).astype(np.int16)


def test_a_unit_changes_the_picture_and_weight_zero_does_not(tiny_sd1: Any, pipeline_env: Any, data_paths: Any,
                                                              runner: scripts.ScriptRunner) -> None:
    plain = pixels(process_images(job(pipeline_env, tiny_sd1, data_paths, runner, None)))
    p = job(pipeline_env, tiny_sd1, data_paths, runner, [unit()])
    steered = process_images(p)
    assert np.abs(pixels(steered) - plain).mean() > 1.0
    assert p.unet_hooks is None, "hooks are cleared after sampling"
    zero = process_images(job(pipeline_env, tiny_sd1, data_paths, runner, [unit(weight=0.0)]))
    assert np.array_equal(pixels(zero), plain)
    disabled = process_images(job(pipeline_env, tiny_sd1, data_paths, runner, [unit(enabled=False)]))
    assert np.array_equal(pixels(disabled), plain)


def record_hooks(p: Any) -> list[Any]:
    """The hooks the UNet saw at every denoiser call (read right after the call)."""
    seen: list[Any] = []
    script_callbacks.on_cfg_denoised(lambda params: seen.append(p.unet_hooks))
    return seen


def test_the_guidance_window_gates_each_step(tiny_sd1: Any, pipeline_env: Any, data_paths: Any,
                                             runner: scripts.ScriptRunner) -> None:
    p = job(pipeline_env, tiny_sd1, data_paths, runner, [unit(guidance_start=0.5, guidance_end=0.5)])
    seen = record_hooks(p)
    process_images(p)
    assert [hooks is not None for hooks in seen] == [False, False, True, False]  # 4 Euler steps: fractions 0..0.75
    assert sorted(seen[2].input_block_additions) == [1, 3], "after the last block of each of the 2 UNet levels"

    p = job(pipeline_env, tiny_sd1, data_paths, runner,
            [unit(guidance_end=0.25), unit(guidance_start=0.5, weight=0.5)])
    seen = record_hooks(p)
    process_images(p)
    assert [hooks is not None for hooks in seen] == [True, True, True, True]
    first, late = seen[0].input_block_additions[1], seen[3].input_block_additions[1]
    assert seen[1] is seen[0] and seen[3] is seen[2], "one set of hooks per set of active units"
    assert torch.allclose(late * 2, first), "the same adapter and picture at weight 0.5 instead of 1"


def test_the_hires_pass_gets_features_at_its_own_size(tiny_sd1: Any, pipeline_env: Any, data_paths: Any,
                                                       runner: scripts.ScriptRunner) -> None:
    p = job(pipeline_env, tiny_sd1, data_paths, runner, [unit()], steps=2, enable_hr=True, hr_scale=2.0,
            hr_upscaler="Latent", denoising_strength=0.6, hr_second_pass_steps=2)
    seen = record_hooks(p)
    processed = process_images(p)
    assert processed.images[0].size == (64, 64)
    sizes = [tuple(hooks.input_block_additions[1].shape[-2:]) for hooks in seen]
    assert sizes == [(16, 16)] * 2 + [(32, 32)] * 2, "32 px first pass, then 64 px (the tiny VAE halves the size)"
    assert p.unet_hooks is None


def test_coadapter_units_go_through_the_fuser_in_the_folder(tiny_sd1: Any, pipeline_env: Any, data_paths: Any,
                                                              runner: scripts.ScriptRunner) -> None:
    folder = data_paths.model_dir("T2I-Adapter")
    for seed, condition in enumerate(("canny", "sketch")):
        write_tiny_adapter(folder, f"coadapter-{condition}-tiny", seed=seed)
    units = [unit(model="coadapter-canny-tiny"), unit(model="coadapter-sketch-tiny")]

    def first_step_features() -> torch.Tensor:
        p = job(pipeline_env, tiny_sd1, data_paths, runner, units, steps=1)
        seen = record_hooks(p)
        process_images(p)
        return seen[0].input_block_additions[1]

    summed = first_step_features()
    torch.manual_seed(3)
    fuser = CoAdapterFuser(FuserConfig(unet_channels=(32, 64), width=32, num_head=4, layers=1))
    for projection in fuser.spatial_ch_projs:  # zero in a fresh fuser (a plain sum); trained ones are not
        torch.nn.init.normal_(projection.weight, std=0.5)
    torch.save(fuser.state_dict(), folder / "coadapter-fuser-tiny.pth")
    fused = first_step_features()
    assert fused.shape == summed.shape and not torch.allclose(fused, summed)
    with pytest.raises(InvalidRequest, match="is a CoAdapter fuser"):
        job(pipeline_env, tiny_sd1, data_paths, runner, [unit(model="coadapter-fuser-tiny")])


def test_features_once_per_job_and_infotext_entries(tiny_sd1: Any, pipeline_env: Any, data_paths: Any,
                                                    runner: scripts.ScriptRunner,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = ui_runtime.compute_features
    monkeypatch.setattr(ui_runtime, "compute_features", lambda *a: calls.append(1) or original(*a))
    p = job(pipeline_env, tiny_sd1, data_paths, runner, [unit(weight=0.8, resize_mode="Resize and fill")],
            n_iter=2)
    processed = process_images(p)
    assert len(calls) == 1, "two batches of the same size share the features"
    params = parse_generation_parameters(processed.infotexts[1])
    assert set(units_from_params(params)) == {0}
    entry = units_from_params(params)[0]
    assert entry["model"].startswith(f"{ADAPTER} [") and len(entry["model"]) == len(ADAPTER) + 13
    assert entry["weight"] == 0.8 and entry["resize_mode"] == "Resize and fill" and entry["module"] == "none"
    assert 'T2I-Adapter 0: "module: none, model: tiny-edge [' in processed.infotexts[0]


def test_an_adapter_for_another_unet_is_left_out_with_a_comment(tiny_sd1: Any, pipeline_env: Any, data_paths: Any,
                                                                  runner: scripts.ScriptRunner) -> None:
    write_tiny_adapter(data_paths.model_dir("T2I-Adapter"), "wider", channels=(48, 96))
    plain = pixels(process_images(job(pipeline_env, tiny_sd1, data_paths, runner, None, steps=2)))
    processed = process_images(job(pipeline_env, tiny_sd1, data_paths, runner, [unit(model="wider")], steps=2))
    assert "T2I-Adapter unit 0: wider gives features of (48, 96) channels, but this model's UNet takes (32, 64)" \
        in processed.comments and "(the unit was left out)" in processed.comments
    assert np.array_equal(pixels(processed), plain)


def test_bad_units_are_refused_with_a_reason(tiny_sd1: Any, pipeline_env: Any, data_paths: Any,
                                             runner: scripts.ScriptRunner) -> None:
    """``setup`` refuses the request before it is queued (the runner lets ``InvalidRequest`` through)."""
    with pytest.raises(InvalidRequest) as refused:
        job(pipeline_env, tiny_sd1, data_paths, runner, [unit(model="nope")])
    assert "'nope'" in refused.value.message and ADAPTER in refused.value.message
    for bad, words in (({"guidance_start": 0.8, "guidance_end": 0.2}, "after guidance_end"),
                       ({"weight": "heavy"}, "weight must be a number"),
                       ({"resize_mode": "Zoom"}, "resize_mode 'Zoom'"),
                       ({"module": "made-up"}, "preprocessor 'made-up' is not available"),
                       ({"image": None}, "no condition picture"),
                       ({"colour": "red"}, "unknown field(s) 'colour'")):
        with pytest.raises(InvalidRequest) as refused:
            job(pipeline_env, tiny_sd1, data_paths, runner, [unit(**bad)])
        assert words in refused.value.message, (bad, refused.value.message)
