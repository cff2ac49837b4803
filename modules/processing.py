"""The generation request and its result: A1111's ``StableDiffusionProcessing{Txt2Img,Img2Img}``, ``Processed`` and
``process_images``.

Field names, defaults and method names are A1111's (v1.10), because the HTTP API builds its request models from these
dataclasses and extensions read and override them. What A1111 takes from globals is an attribute here, filled in by
``process_images`` when left unset:

* ``p.sd_model``: a loaded :class:`~modules.sd.loader.StableDiffusionModel`;
* ``p.opts`` (default ``shared.opts``, else built-in defaults), ``p.state`` (default ``shared.state``, else a new
  :class:`~modules.shared_state.State`), ``p.paths`` (default ``shared.paths``: data folder, hash cache);
* ``p.scripts`` / ``p.callbacks`` (see :mod:`modules.processing_hooks`), ``p.prompt_styles`` (a StyleDatabase),
  ``p.lora_networks`` (a ``LoraNetworks``), ``p.unet_hooks`` (a ``UNetHooks`` passed to every UNet call).

The pipeline itself lives in ``processing_run`` (main loop), ``processing_steps`` (sampling), ``processing_img2img``,
``processing_hires``, ``processing_prompts`` and ``processing_infotext``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from modules import extra_networks, images
from modules import processing_hires as hires
from modules import processing_img2img as i2i
from modules import processing_prompts as prompts_
from modules import processing_steps as steps_
from modules.errors import ModelNotFound
from modules.processing_hooks import run_script_hook
from modules.processing_infotext import create_infotext, program_version
from modules.processing_result import Processed
from modules.processing_run import (
    apply_override_settings,
    decode_latent_batch,
    fix_sampler_and_scheduler,
    process_images_inner,
    restore_settings,
)
from modules.rng import ImageRNG, get_fixed_seed, slerp

__all__ = [
    "Processed", "StableDiffusionProcessing", "StableDiffusionProcessingImg2Img", "StableDiffusionProcessingTxt2Img",
    "create_infotext", "create_random_tensors", "decode_latent_batch", "fix_seed", "get_fixed_seed",
    "process_images", "program_version", "slerp",
]

log = logging.getLogger(__name__)

opt_C = 4
opt_f = 8


def _shared(name: str) -> Any:
    from modules import shared

    return getattr(shared, name, None)


@dataclass(repr=False)
class StableDiffusionProcessing:
    """Everything one generation job needs; the fields are A1111's request fields."""

    sd_model: Any = None
    outpath_samples: str | None = None
    outpath_grids: str | None = None
    prompt: str | list[str] = ""
    prompt_for_display: str | None = None
    negative_prompt: str | list[str] = ""
    styles: list[str] | None = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    seed_enable_extras: bool = True
    sampler_name: str | None = None
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    extra_generation_params: dict[str, Any] | None = None
    overlay_images: list | None = None
    eta: float | None = None
    do_not_reload_embeddings: bool = False
    denoising_strength: float | None = None
    ddim_discretize: str | None = None
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    sampler_index: int | None = None
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    token_merging_ratio = 0
    token_merging_ratio_hr = 0
    disable_extra_networks: bool = False
    firstpass_image: Any = None
    comments: dict | None = None

    # filled while processing (A1111's init=False fields)
    scripts_value: Any = field(default=None, init=False)
    script_args_value: list | None = field(default=None, init=False)
    scripts_setup_complete: bool = field(default=False, init=False)
    sampler: Any = field(default=None, init=False)
    is_using_inpainting_conditioning: bool = field(default=False, init=False)
    paste_to: tuple | None = field(default=None, init=False)
    is_hr_pass: bool = field(default=False, init=False)
    c: Any = field(default=None, init=False)
    uc: Any = field(default=None, init=False)
    rng: ImageRNG | None = field(default=None, init=False)
    step_multiplier: int = field(default=1, init=False)
    firstpass_steps: int = field(default=0, init=False)
    color_corrections: list | None = field(default=None, init=False)
    all_prompts: list | None = field(default=None, init=False)
    all_negative_prompts: list | None = field(default=None, init=False)
    all_seeds: list | None = field(default=None, init=False)
    all_subseeds: list | None = field(default=None, init=False)
    iteration: int = field(default=0, init=False)
    batch_index: int = field(default=0, init=False)
    main_prompt: str | None = field(default=None, init=False)
    main_negative_prompt: str | None = field(default=None, init=False)
    prompts: list | None = field(default=None, init=False)
    negative_prompts: list | None = field(default=None, init=False)
    seeds: list | None = field(default=None, init=False)
    subseeds: list | None = field(default=None, init=False)
    extra_network_data: dict | None = field(default=None, init=False)
    user: str | None = field(default=None, init=False)
    sd_model_name: str | None = field(default=None, init=False)
    sd_model_hash: str | None = field(default=None, init=False)
    sd_vae_name: str | None = field(default=None, init=False)
    sd_vae_hash: str | None = field(default=None, init=False)
    is_api: bool = field(default=False, init=False)

    # collaborators (A1111 reads these from globals)
    opts: Any = field(default=None, init=False)
    state: Any = field(default=None, init=False)
    paths: Any = field(default=None, init=False)
    callbacks: Any = field(default=None, init=False)
    prompt_styles: Any = field(default=None, init=False)
    lora_networks: Any = field(default=None, init=False)
    unet_hooks: Any = field(default=None, init=False)
    save_params_txt: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        if self.sampler_index is not None:
            log.warning("sampler_index does nothing; use sampler_name")
        self.comments = {}
        if self.styles is None:
            self.styles = []
        self.sampler_noise_scheduler_override = None
        self.extra_generation_params = self.extra_generation_params or {}
        self.override_settings = self.override_settings or {}
        self.script_args_value = self.script_args_value or []
        self.refiner_checkpoint_info = None
        if not self.seed_enable_extras:
            self.subseed, self.subseed_strength = -1, 0
            self.seed_resize_from_h = self.seed_resize_from_w = 0

    # collaborators ------------------------------------------------------------------------------------------------
    def resolve_runtime(self) -> None:
        """Fill unset collaborators from ``modules.shared`` (or fresh defaults), as A1111's globals would."""
        if self.sd_model is None:
            self.sd_model = _shared("sd_model")
        if self.sd_model is None:
            raise ModelNotFound("No Stable Diffusion model is loaded.",
                                "Put a checkpoint in models/Stable-diffusion and select it.")
        if self.opts is None:
            self.opts = images.get_opts()
        if self.state is None:
            from modules.shared_state import State

            self.state = _shared("state") or State()
        if self.paths is None:
            self.paths = _shared("paths")
        if self.prompt_styles is None:
            self.prompt_styles = _shared("prompt_styles")
        if self.lora_networks is None:
            self.lora_networks = _shared("lora_networks")
        cmd_opts = _shared("cmd_opts")
        if cmd_opts is not None and getattr(cmd_opts, "no_prompt_history", False):
            self.save_params_txt = False

    def fill_fields_from_opts(self) -> None:
        opts = self.opts
        self.s_min_uncond = self.s_min_uncond if self.s_min_uncond is not None else getattr(opts, "s_min_uncond", 0.0)
        self.s_churn = self.s_churn if self.s_churn is not None else getattr(opts, "s_churn", 0.0)
        self.s_tmin = self.s_tmin if self.s_tmin is not None else getattr(opts, "s_tmin", 0.0)
        self.s_tmax = (self.s_tmax if self.s_tmax is not None else getattr(opts, "s_tmax", 0.0)) or float("inf")
        self.s_noise = self.s_noise if self.s_noise is not None else getattr(opts, "s_noise", 1.0)

    @property
    def scripts(self) -> Any:
        return self.scripts_value

    @scripts.setter
    def scripts(self, value: Any) -> None:
        self.scripts_value = value
        if self.scripts_value and self.script_args_value and not self.scripts_setup_complete:
            self.setup_scripts()

    @property
    def script_args(self) -> list:
        return self.script_args_value

    @script_args.setter
    def script_args(self, value: list) -> None:
        self.script_args_value = value
        if self.scripts_value and self.script_args_value and not self.scripts_setup_complete:
            self.setup_scripts()

    def setup_scripts(self) -> None:
        self.scripts_setup_complete = True
        setup = getattr(self.scripts, "setup_scrips", None) or getattr(self.scripts, "setup_scripts", None)
        if setup is not None:
            setup(self, is_ui=not self.is_api)

    def comment(self, text: str) -> None:
        self.comments[text] = 1

    # output -------------------------------------------------------------------------------------------------------
    def resolve_output_dir(self, folder: str | os.PathLike[str]) -> Path:
        """A relative output folder is taken from the data folder (``p.paths.data_dir``), else the working folder."""
        path = Path(folder)
        data_dir = getattr(self.paths, "data_dir", None)
        return path if path.is_absolute() or data_dir is None else Path(data_dir) / path

    def default_outpath(self, grid: bool) -> str:
        opts = self.opts
        kind = "img2img" if isinstance(self, StableDiffusionProcessingImg2Img) else "txt2img"
        if grid:
            return getattr(opts, "outdir_grids", "") or getattr(opts, f"outdir_{kind}_grids", f"outputs/{kind}-grids")
        return getattr(opts, "outdir_samples", "") or getattr(opts, f"outdir_{kind}_samples",
                                                               f"outputs/{kind}-images")

    def save_image(self, image: Image.Image, seed: int, prompt: str, info: str, *, suffix: str = "",
                   grid: bool = False) -> str:
        """Save like A1111 (numbered file in the samples or grids folder, infotext inside); returns the path."""
        opts = self.opts
        folder = (self.outpath_grids if grid else self.outpath_samples) or self.default_outpath(grid)
        callbacks = self.callbacks
        fullfn, _ = images.save_image(
            image, str(self.resolve_output_dir(folder)), "grid" if grid else "", seed, prompt,
            getattr(opts, "grid_format" if grid else "samples_format", "png"), info=info, p=self, suffix=suffix,
            grid=grid, short_filename=grid and not getattr(opts, "grid_extended_filename", False), opts=opts,
            before_save=getattr(callbacks, "before_image_saved_callback", None),
            after_save=getattr(callbacks, "image_saved_callback", None))
        return fullfn

    def save_samples(self) -> bool:
        """Whether generated images are written to disk (interrupted/skipped ones only with save_incomplete_images)."""
        opts, state = self.opts, self.state
        incomplete_ok = getattr(opts, "save_incomplete_images", False) or not (state.interrupted or state.skipped)
        return bool(getattr(opts, "samples_save", True)) and not self.do_not_save_samples and incomplete_ok

    # prompts and conds ------------------------------------------------------------------------------------------
    def setup_prompts(self) -> None:
        prompts_.setup_prompts(self)

    def parse_extra_network_prompts(self) -> None:
        self.prompts, self.extra_network_data = extra_networks.parse_prompts(self.prompts)

    def setup_conds(self) -> None:
        total_steps = prompts_.schedule_steps(self.sampler_name, self.steps)
        self.step_multiplier = total_steps // self.steps
        self.firstpass_steps = total_steps
        self.c, self.uc = prompts_.compute_conds(self, self.prompts, self.negative_prompts, self.width, self.height,
                                                 total_steps)

    def get_conds(self) -> tuple[Any, Any]:
        return self.c, self.uc

    def get_token_merging_ratio(self, for_hr: bool = False) -> float:
        return 0.0  # token merging is not implemented

    # image conditioning -----------------------------------------------------------------------------------------
    def txt2img_image_conditioning(self, x: Tensor, width: int | None = None, height: int | None = None) -> Any:
        return i2i.txt2img_conditioning(self, x, width or self.width, height or self.height)

    def img2img_image_conditioning(self, source_image: Tensor, latent_image: Tensor, image_mask: Any = None,
                                   round_image_mask: bool = True) -> Any:
        return i2i.image_conditioning(self, source_image, latent_image, image_mask, round_image_mask)

    # the two steps subclasses implement -------------------------------------------------------------------------
    def init(self, all_prompts: list[str], all_seeds: list[int], all_subseeds: list[int]) -> None:
        pass

    def sample(self, conditioning: Any, unconditional_conditioning: Any, seeds: list[int], subseeds: list[int],
               subseed_strength: float, prompts: list[str]) -> Tensor:
        raise NotImplementedError

    def close(self) -> None:
        self.sampler = None
        self.c = None
        self.uc = None


@dataclass(repr=False)
class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    enable_hr: bool = False
    denoising_strength: float = 0.75
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str | list[str] = ""
    hr_negative_prompt: str | list[str] = ""
    force_task_id: str | None = None

    hr_checkpoint_info: Any = field(default=None, init=False)
    hr_upscale_to_x: int = field(default=0, init=False)
    hr_upscale_to_y: int = field(default=0, init=False)
    truncate_x: int = field(default=0, init=False)
    truncate_y: int = field(default=0, init=False)
    applied_old_hires_behavior_to: tuple | None = field(default=None, init=False)
    latent_scale_mode: dict | None = field(default=None, init=False)
    hr_c: Any = field(default=None, init=False)
    hr_uc: Any = field(default=None, init=False)
    all_hr_prompts: list | None = field(default=None, init=False)
    all_hr_negative_prompts: list | None = field(default=None, init=False)
    hr_prompts: list | None = field(default=None, init=False)
    hr_negative_prompts: list | None = field(default=None, init=False)
    hr_extra_network_data: dict | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.firstphase_width != 0 or self.firstphase_height != 0:
            self.hr_upscale_to_x, self.hr_upscale_to_y = self.width, self.height
            self.width, self.height = self.firstphase_width, self.firstphase_height

    def calculate_target_resolution(self) -> None:
        hires.calculate_target_resolution(self)

    def init(self, all_prompts: list[str], all_seeds: list[int], all_subseeds: list[int]) -> None:
        hires.init_hires(self)

    def setup_prompts(self) -> None:
        super().setup_prompts()
        if self.enable_hr:
            prompts_.setup_hr_prompts(self)

    def parse_extra_network_prompts(self) -> None:
        super().parse_extra_network_prompts()
        if self.enable_hr:
            bs, n = self.batch_size, self.iteration
            self.hr_prompts = self.all_hr_prompts[n * bs: (n + 1) * bs]
            self.hr_negative_prompts = self.all_hr_negative_prompts[n * bs: (n + 1) * bs]
            self.hr_prompts, self.hr_extra_network_data = extra_networks.parse_prompts(self.hr_prompts)

    def setup_conds(self) -> None:
        if self.is_hr_pass:
            self.hr_c = None
            self.calculate_hr_conds()
            return
        super().setup_conds()
        self.hr_c = self.hr_uc = None
        if self.enable_hr and getattr(self.opts, "hires_fix_use_firstpass_conds", False):
            self.calculate_hr_conds()

    def calculate_hr_conds(self) -> None:
        if self.hr_c is not None:
            return
        hr_sampler = self.hr_sampler_name or self.sampler_name
        total_steps = prompts_.schedule_steps(hr_sampler, self.hr_second_pass_steps or self.steps)
        self.hr_c, self.hr_uc = prompts_.compute_conds(
            self, self.hr_prompts, self.hr_negative_prompts, self.hr_upscale_to_x, self.hr_upscale_to_y,
            self.firstpass_steps, hires_steps=total_steps)

    def get_conds(self) -> tuple[Any, Any]:
        return (self.hr_c, self.hr_uc) if self.is_hr_pass else super().get_conds()

    def sample(self, conditioning: Any, unconditional_conditioning: Any, seeds: list[int], subseeds: list[int],
               subseed_strength: float, prompts: list[str]) -> Tensor:
        self.sampler = steps_.create_sampler(self, self.sampler_name, self.scheduler)
        if self.firstpass_image is not None and self.enable_hr:
            pixels = i2i.images_to_tensor([self.firstpass_image], self.sd_model.device, torch.float32)
            if self.latent_scale_mode is None:
                samples, decoded = None, pixels * 2 - 1
            else:
                samples, decoded = i2i.encode_images(self, pixels, seeds), None
        else:
            x = self.rng.next()
            run_script_hook(self, "process_before_every_sampling", x=x, noise=x, c=conditioning,
                            uc=unconditional_conditioning)
            samples = steps_.sample(self, self.sampler, x, conditioning, unconditional_conditioning,
                                    self.txt2img_image_conditioning(x))
            del x
            if not self.enable_hr:
                return samples
            decoded = None
            if self.latent_scale_mode is None and not (self.state.interrupted or self.state.skipped):
                decoded = torch.stack(decode_latent_batch(self, samples))
        return self.sample_hr_pass(samples, decoded, seeds, subseeds, subseed_strength, prompts)

    def sample_hr_pass(self, samples: Tensor, decoded_samples: Tensor | None, seeds: list[int], subseeds: list[int],
                       subseed_strength: float, prompts: list[str]) -> Tensor:
        return hires.sample_hr_pass(self, samples, decoded_samples, seeds, subseeds, subseed_strength, prompts)

    def close(self) -> None:
        super().close()
        self.hr_c = self.hr_uc = None


@dataclass(repr=False)
class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    init_images: list | None = None
    resize_mode: int = 0
    denoising_strength: float = 0.75
    image_cfg_scale: float | None = None
    mask: Any = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int | None = None
    mask_round: bool = True
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float | None = None
    latent_mask: Any = None
    force_task_id: str | None = None
    include_init_images: bool = False

    image_mask: Any = field(default=None, init=False)
    nmask: Tensor | None = field(default=None, init=False)
    image_conditioning: Tensor | None = field(default=None, init=False)
    init_img_hash: str | None = field(default=None, init=False)
    mask_for_overlay: Image.Image | None = field(default=None, init=False)
    init_latent: Tensor | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.image_mask = self.mask  # A1111: the picture moves to image_mask; mask becomes the latent mask
        self.mask = None
        if isinstance(self.mask_blur, int):
            self.mask_blur_x = self.mask_blur_y = self.mask_blur
        self.mask_blur = self.mask_blur_x if self.mask_blur_x == self.mask_blur_y else None
        self.init_images = list(self.init_images or [])

    def fill_fields_from_opts(self) -> None:
        super().fill_fields_from_opts()
        if self.initial_noise_multiplier is None:
            self.initial_noise_multiplier = float(getattr(self.opts, "initial_noise_multiplier", 1.0))

    def init(self, all_prompts: list[str], all_seeds: list[int], all_subseeds: list[int]) -> None:
        if not self.init_images:
            raise ValueError("img2img needs at least one init image")
        i2i.init_img2img(self, all_prompts, all_seeds, all_subseeds)

    def sample(self, conditioning: Any, unconditional_conditioning: Any, seeds: list[int], subseeds: list[int],
               subseed_strength: float, prompts: list[str]) -> Tensor:
        return i2i.sample_img2img(self, conditioning, unconditional_conditioning)


def create_random_tensors(shape: tuple[int, ...], seeds: list[int], subseeds: list[int] | None = None,
                          subseed_strength: float = 0.0, seed_resize_from_h: int = 0, seed_resize_from_w: int = 0,
                          p: StableDiffusionProcessing | None = None) -> Tensor:
    """A1111's helper: the first noise draw of per-image generators."""
    device = p.sd_model.device if p is not None and p.sd_model is not None else None
    source = getattr(p.opts, "randn_source", None) if p is not None and p.opts is not None else None
    generator = ImageRNG(shape, seeds, subseeds=subseeds, subseed_strength=subseed_strength,
                         seed_resize_from_h=seed_resize_from_h, seed_resize_from_w=seed_resize_from_w, device=device,
                         randn_source=source)
    return generator.next()


def fix_seed(p: StableDiffusionProcessing) -> None:
    p.seed = get_fixed_seed(p.seed)
    p.subseed = get_fixed_seed(p.subseed)


def process_images(p: StableDiffusionProcessing) -> Processed:
    """Run a job: settings overrides applied (and restored), every image generated, saved and described."""
    p.resolve_runtime()
    run_script_hook(p, "before_process")
    stored = apply_override_settings(p)
    try:
        fix_sampler_and_scheduler(p)
        return process_images_inner(p)
    finally:
        if p.override_settings_restore_afterwards:
            restore_settings(p, stored)
