"""Sampling for a processing job: pick the sampler, build the guided denoiser, run txt2img or img2img steps.

This is A1111's ``KDiffusionSampler`` / ``CompVisSampler`` (``sample`` and ``sample_img2img``) as functions over the
registry's plain sampler functions. Per run:

* the UNet is wrapped as ``DiscreteDenoiser`` (or ``LCMDenoiser``) and then :class:`CFGDenoiser`, which receives the
  ``p.callbacks`` CFG hooks, checks ``state.interrupted``/``state.skipped`` before every model call and hands live
  preview latents to ``state`` every ``show_progress_every_n_steps`` steps;
* k-diffusion samplers get sigmas from the scheduler (with A1111's infotext side notes: "Schedule type", min/max
  sigma, rho, "Discard penultimate sigma"), timestep samplers A1111's timestep grid;
* noise comes from ``p.rng`` (per-image seeded generators, ENSD) or per-image Brownian trees for SDE samplers;
* an interrupt or skip ends the run early and returns the latest x0 estimate, as A1111 does.

The object stored in ``p.sampler`` (:class:`SamplerRun`) carries A1111's attribute names that extensions read
(``config``, ``model_wrap``, ``model_wrap_cfg``, ``sampler_extra_args``, ``conditioning_key``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from modules import live_preview
from modules.processing_hooks import ExtraNoiseParams, callback_function
from modules.samplers import img2img as i2i
from modules.samplers import registry
from modules.samplers.cfg_denoiser import CFGDenoiser, SamplingInterrupted, concat_image_cond
from modules.samplers.denoiser import DiscreteDenoiser, LCMDenoiser
from modules.samplers.noise import noise_sampler_from
from modules.samplers.registry import SamplerData
from modules.samplers.schedulers import Scheduler, find_scheduler
from modules.samplers.timesteps import timesteps_for_steps

log = logging.getLogger(__name__)

SAME_SCHEDULER = ("Use same scheduler", "")


@dataclass
class SamplerRun:
    """A1111's ``p.sampler``: the chosen sampler and scheduler, their denoisers, and the current run's arguments."""

    config: SamplerData
    scheduler: Scheduler
    model_wrap: DiscreteDenoiser
    model_wrap_cfg: CFGDenoiser
    conditioning_key: str = "crossattn"
    sampler_extra_args: dict[str, Any] = field(default_factory=dict)
    last_latent: Tensor | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def is_timestep_sampler(self) -> bool:
        return self.config.kind == "timesteps"


def resolve_sampler(sampler_name: str | None, scheduler_name: str | None) -> tuple[SamplerData, Scheduler]:
    """Sampler and scheduler by A1111 name; unknown schedulers fall back to Automatic like A1111's autocorrection."""
    try:
        return registry.resolve(sampler_name, scheduler_name)
    except ValueError:
        return registry.resolve(sampler_name, None)


def _model_function(p: Any) -> Callable[..., Tensor]:
    """The UNet as ``fn(x, t, context=..., y=..., c_concat=...)``; ``p.unet_hooks`` is read at every call.

    With ``--compile`` (``sd_model.extras["compiled_unet"]``) the compiled UNet runs the calls that carry no hooks.
    """
    unet = p.sd_model.unet
    compiled = getattr(p.sd_model, "extras", {}).get("compiled_unet")

    def call_unet(x: Tensor, t: Tensor, context: Tensor, y: Tensor | None = None, **_: Any) -> Tensor:
        hooks = getattr(p, "unet_hooks", None)
        if compiled is not None and hooks is None:
            return compiled(x, t, context, y)
        return unet(x, t, context, y, hooks=hooks)

    return concat_image_cond(call_unet)


def _preview_every(opts: Any) -> int:
    if not getattr(opts, "live_previews_enable", True):
        return 0
    return max(int(getattr(opts, "show_progress_every_n_steps", 10) or 0), 0)


def install_preview_decoder(p: Any) -> None:
    """Give ``p.state`` the live preview decoder the settings ask for (``show_progress_type``) for ``p``'s model.

    Built per sampler run, so a changed setting or model applies from the next batch on. A decoder that cannot be
    built leaves the run without previews (logged); it never stops generation.
    """
    state = p.state
    if not hasattr(state, "install_preview_decoder"):
        return
    try:
        decoder = live_preview.preview_decoder_for(p.sd_model, p.opts, getattr(p, "paths", None))
    except Exception as e:  # a preview is never worth a failed job
        log.warning("Live preview disabled for this run: %s: %s", type(e).__name__, e)
        decoder = None
    state.install_preview_decoder(decoder)


def create_sampler(p: Any, sampler_name: str | None, scheduler_name: str | None) -> SamplerRun:
    """A fresh sampler run for ``p`` (A1111's ``sd_samplers.create_sampler``); also installs the preview decoder."""
    sampler, scheduler = resolve_sampler(sampler_name, scheduler_name)
    model = p.sd_model
    model_fn = _model_function(p)
    if sampler.options.get("denoiser") == "lcm":
        inner = LCMDenoiser(model_fn, model.schedule)
    else:
        inner = DiscreteDenoiser(model_fn, model.schedule)
    opts, state = p.opts, p.state
    install_preview_decoder(p)
    empty = None
    if getattr(opts, "pad_cond_uncond", False):
        from modules.processing_prompts import empty_cond

        empty = empty_cond(p)
    cfg = CFGDenoiser(
        inner,
        on_cfg_denoiser=callback_function(p, "cfg_denoiser_callback"),
        on_cfg_denoised=callback_function(p, "cfg_denoised_callback"),
        on_cfg_after_cfg=callback_function(p, "cfg_after_cfg_callback"),
        interrupted=lambda: bool(state.interrupted or state.skipped),
        on_preview=lambda latent, step: state.set_current_latent(latent, step),
        preview_every=_preview_every(opts),
        preview_content=getattr(opts, "live_preview_content", "Prompt"),
        max_batch=None if getattr(opts, "batch_cond_uncond", True) else p.batch_size,
        s_min_uncond_all=bool(getattr(opts, "s_min_uncond_all", False)),
        skip_early_cond=float(getattr(opts, "skip_early_cond", 0.0) or 0.0),
        pad_cond_uncond=bool(getattr(opts, "pad_cond_uncond", False)),
        pad_cond_uncond_v0=bool(getattr(opts, "pad_cond_uncond_v0", False)),
        empty_cond=empty,
        mask_before_denoising=sampler.kind == "timesteps",
    )
    key = "hybrid" if model.config.unet.in_channels == 9 else "crossattn"
    return SamplerRun(sampler, scheduler, inner, cfg, conditioning_key=key)


# --- schedules -------------------------------------------------------------------------------------------------------

def _scheduler_for(p: Any, run: SamplerRun) -> Scheduler:
    """The scheduler actually used: Automatic means the sampler's preferred one (or none: the model's sigmas)."""
    name = (p.hr_scheduler if p.is_hr_pass else p.scheduler) or "Automatic"
    if name in SAME_SCHEDULER:
        name = p.scheduler or "Automatic"
    try:
        scheduler = find_scheduler(name)
    except ValueError:
        scheduler = find_scheduler(None)
    if scheduler.function is None:
        scheduler = find_scheduler(run.config.options.get("scheduler"))
    return scheduler


def _discard_penultimate(p: Any, run: SamplerRun) -> bool:
    own = bool(run.config.options.get("discard_next_to_last_sigma", False))
    if getattr(p.opts, "always_discard_next_to_last_sigma", False) and not own:
        p.extra_generation_params["Discard penultimate sigma"] = True
        return True
    return own


def get_sigmas(p: Any, run: SamplerRun, steps: int) -> Tensor:
    """A1111's ``KDiffusionSampler.get_sigmas`` (float32 on the model's device), noting its infotext entries."""
    opts = p.opts
    schedule = p.sd_model.schedule
    scheduler = _scheduler_for(p, run)
    discard = _discard_penultimate(p, run)
    sigma_min = float(getattr(opts, "sigma_min", 0.0) or 0.0)
    sigma_max = float(getattr(opts, "sigma_max", 0.0) or 0.0)
    rho = float(getattr(opts, "rho", 0.0) or 0.0)
    if scheduler.function is not None:
        if scheduler.label != "Automatic" and not p.is_hr_pass:
            p.extra_generation_params["Schedule type"] = scheduler.label
        elif scheduler.label != p.extra_generation_params.get("Schedule type"):
            p.extra_generation_params["Hires schedule type"] = scheduler.label
        if sigma_min and sigma_min != float(schedule.sigmas[0]):
            p.extra_generation_params["Schedule min sigma"] = sigma_min
        if sigma_max and sigma_max != float(schedule.sigmas[-1]):
            p.extra_generation_params["Schedule max sigma"] = sigma_max
        if scheduler.default_rho != -1 and rho and rho != scheduler.default_rho:
            p.extra_generation_params["Schedule rho"] = rho
        if scheduler.name == "beta":
            p.extra_generation_params["Beta schedule alpha"] = getattr(opts, "beta_dist_alpha", 0.6)
            p.extra_generation_params["Beta schedule beta"] = getattr(opts, "beta_dist_beta", 0.6)
    sigmas = registry.sigmas_for(
        run.config.name, scheduler.name, steps, schedule, sigma_min=sigma_min or None, sigma_max=sigma_max or None,
        rho=rho or None, is_sdxl=p.sd_model.is_sdxl, always_discard_next_to_last_sigma=discard,
        beta_alpha=float(getattr(opts, "beta_dist_alpha", 0.6)), beta_beta=float(getattr(opts, "beta_dist_beta", 0.6)),
    )
    return sigmas.to(p.sd_model.device)


def get_timesteps(p: Any, run: SamplerRun, steps: int) -> Tensor:
    """A1111's ``CompVisSampler.get_timesteps``: ``range(0, 1000, 1000 // steps) + 1`` clipped to 999."""
    return timesteps_for_steps(steps, discard_next_to_last_sigma=_discard_penultimate(p, run))


# --- sampler arguments -----------------------------------------------------------------------------------------------

def _eta(p: Any, run: SamplerRun) -> float | None:
    """eta for samplers that take it, from ``p.eta`` or the setting; written to the infotext if not the default."""
    if not run.config.accepts("eta"):
        return None
    if run.is_timestep_sampler:
        option, label, default = "eta_ddim", "Eta DDIM", 0.0
    else:
        option, label, default = "eta_ancestral", "Eta", 1.0
    eta = p.eta if p.eta is not None else float(getattr(p.opts, option, default))
    if eta != default:
        p.extra_generation_params[label] = eta
    return eta


def _churn_knobs(p: Any, run: SamplerRun) -> dict[str, float]:
    """s_churn/s_tmin/s_tmax/s_noise for samplers that take them; non-default values go into the infotext."""
    values = {"s_churn": p.s_churn, "s_tmin": p.s_tmin, "s_tmax": p.s_tmax, "s_noise": p.s_noise}
    defaults = {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": math.inf, "s_noise": 1.0}
    labels = {"s_churn": "Sigma churn", "s_tmin": "Sigma tmin", "s_tmax": "Sigma tmax", "s_noise": "Sigma noise"}
    knobs = {}
    for name in run.config.extra_params:
        if run.config.accepts(name) and values[name] is not None:
            knobs[name] = float(values[name])
            if knobs[name] != defaults[name]:
                p.extra_generation_params[labels[name]] = knobs[name]
    return knobs


def _prepare(p: Any, run: SamplerRun, c: Any, uc: Any, image_cond: Tensor | None) -> dict[str, Any]:
    """Reset the CFG denoiser for a new run and return the sampler's ``extra_args``."""
    cfg = run.model_wrap_cfg
    cfg.step = 0
    cfg.sampling_step = 0
    mask, nmask = getattr(p, "mask", None), getattr(p, "nmask", None)
    if isinstance(mask, Tensor) and isinstance(nmask, Tensor) and not p.is_hr_pass:
        cfg.mask, cfg.nmask = mask, nmask
    else:
        cfg.mask = cfg.nmask = None
    if p.s_min_uncond:
        p.extra_generation_params["NGMS"] = p.s_min_uncond
    run.sampler_extra_args = {"cond": c, "uncond": uc, "cond_scale": p.cfg_scale, "image_cond": image_cond,
                              "s_min_uncond": p.s_min_uncond or 0.0}
    return run.sampler_extra_args


def _launch(p: Any, run: SamplerRun, steps: int, total_calls: int, start: Tensor,
            call: Callable[[Callable[[dict], None]], Tensor]) -> Tensor:
    """Run ``call(callback)``; an interrupt or skip returns the latest x0 (or ``start`` if nothing ran yet)."""
    state, cfg = p.state, run.model_wrap_cfg
    state.sampling_steps = steps
    state.sampling_step = 0
    cfg.total_sampling_steps = steps
    cfg.total_steps = total_calls
    run.last_latent = start

    def on_step(d: dict) -> None:
        cfg.sampler_callback(d)
        state.sampling_step = int(d["i"])
        run.last_latent = d.get("denoised", run.last_latent)

    try:
        return call(on_step)
    except SamplingInterrupted:
        latest = cfg.last_latent
        return latest if latest is not None else run.last_latent


def _multiplier(run: SamplerRun) -> int:
    return 2 if run.config.options.get("second_order", False) else 1


def _timestep_kwargs(p: Any, run: SamplerRun, is_img2img: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"alphas_cumprod": p.sd_model.schedule.alphas_cumprod}
    eta = _eta(p, run)
    if eta is not None:
        kwargs["eta"] = eta
    if run.config.accepts("noise_sampler"):
        kwargs["noise_sampler"] = noise_sampler_from(p.rng.next)
    if run.config.accepts("is_img2img"):
        opts = p.opts
        kwargs.update(is_img2img=is_img2img, order=int(getattr(opts, "uni_pc_order", 3)),
                      variant=getattr(opts, "uni_pc_variant", "bh1"),
                      skip_type=getattr(opts, "uni_pc_skip_type", "time_uniform"),
                      lower_order_final=bool(getattr(opts, "uni_pc_lower_order_final", True)))
    return kwargs


def _kdiffusion_kwargs(p: Any, run: SamplerRun, x: Tensor, sigmas: Tensor) -> dict[str, Any]:
    image_noise = p.rng.noise_sampler()
    noise_sampler = registry.make_noise_sampler(run.config, x, sigmas, p.seeds, image_noise)
    knobs = registry.sampler_knobs(run.config, eta=_eta(p, run), noise_sampler=noise_sampler)
    knobs.update(_churn_knobs(p, run))
    return knobs


# --- txt2img and img2img --------------------------------------------------------------------------------------------

@torch.no_grad()
def sample(p: Any, run: SamplerRun, noise: Tensor, c: Any, uc: Any, image_cond: Tensor | None,
           steps: int | None = None) -> Tensor:
    """txt2img: denoise unit noise ``noise`` over ``steps`` (default ``p.steps``) steps."""
    steps = steps or p.steps
    extra_args = _prepare(p, run, c, uc, image_cond)
    fn = run.config.function
    if run.is_timestep_sampler:
        timesteps = get_timesteps(p, run, steps)
        kwargs = _timestep_kwargs(p, run, is_img2img=False)
        return _launch(p, run, steps, steps, noise, lambda cb: fn(
            run.model_wrap_cfg, noise, timesteps, extra_args=extra_args, callback=cb, disable=True, **kwargs))

    sigmas = get_sigmas(p, run, steps)
    if getattr(p.opts, "sgm_noise_multiplier", False):
        p.extra_generation_params["SGM noise multiplier"] = True
        x = noise * torch.sqrt(1.0 + sigmas[0] ** 2.0)
    else:
        x = noise * sigmas[0]
    kwargs = _kdiffusion_kwargs(p, run, x, sigmas)
    return _launch(p, run, steps, steps * _multiplier(run), x, lambda cb: fn(
        run.model_wrap_cfg, x, sigmas, extra_args=extra_args, callback=cb, disable=True, **kwargs))


def _extra_noise(p: Any, noise: Tensor, x: Tensor, xi: Tensor) -> tuple[Tensor, float]:
    """A1111's ``img2img_extra_noise``: (possibly callback-changed noise, amount); amount 0 means none."""
    amount = float(getattr(p.opts, "img2img_extra_noise", 0.0) or 0.0)
    if amount <= 0:
        return noise, 0.0
    p.extra_generation_params["Extra noise"] = amount
    params = ExtraNoiseParams(noise, x, xi)
    hook = callback_function(p, "extra_noise_callback")
    if hook is not None:
        hook(params)
    return params.noise, amount


@torch.no_grad()
def sample_img2img(p: Any, run: SamplerRun, init_latent: Tensor, noise: Tensor, c: Any, uc: Any,
                   image_cond: Tensor | None, steps: int | None = None) -> Tensor:
    """img2img / hires pass: noise ``init_latent`` to the denoising strength and denoise it back.

    An explicit ``steps`` (the hires pass) or the ``img2img_fix_steps`` setting runs exactly that many steps.
    """
    fix = steps is not None or bool(getattr(p.opts, "img2img_fix_steps", False))
    requested = steps or p.steps
    full_steps, t_enc = i2i.setup_img2img_steps(requested, p.denoising_strength, fix_steps=fix)
    extra_args = _prepare(p, run, c, uc, image_cond)
    cfg = run.model_wrap_cfg
    cfg.init_latent = init_latent
    fn = run.config.function
    if run.is_timestep_sampler:
        timesteps = get_timesteps(p, run, full_steps)
        walked, noise_t = i2i.img2img_timesteps(timesteps, t_enc)
        alphas = p.sd_model.schedule.alphas_cumprod
        xi = i2i.noise_latent_vp(init_latent, noise, alphas, noise_t)
        noise, amount = _extra_noise(p, noise, init_latent, xi)
        if amount:
            xi = i2i.noise_latent_vp(init_latent, noise, alphas, noise_t, extra_noise=amount)
        kwargs = _timestep_kwargs(p, run, is_img2img=True)
        return _launch(p, run, t_enc + 1, t_enc + 1, init_latent, lambda cb: fn(
            cfg, xi, walked, extra_args=extra_args, callback=cb, disable=True, **kwargs))

    sigmas = get_sigmas(p, run, full_steps)
    sigma_sched = i2i.img2img_sigmas(sigmas, full_steps, t_enc)
    xi = i2i.noise_latent(init_latent, noise, sigma_sched[0])
    noise, amount = _extra_noise(p, noise, init_latent, xi)
    if amount:
        xi = i2i.noise_latent(init_latent, noise, sigma_sched[0], extra_noise=amount)
    image_noise = p.rng.noise_sampler()
    noise_sampler = registry.make_noise_sampler(run.config, init_latent, sigmas, p.seeds, image_noise)
    kwargs = registry.sampler_knobs(run.config, eta=_eta(p, run), noise_sampler=noise_sampler)
    kwargs.update(_churn_knobs(p, run))
    return _launch(p, run, t_enc + 1, (t_enc + 1) * _multiplier(run), init_latent, lambda cb: fn(
        cfg, xi, sigma_sched, extra_args=extra_args, callback=cb, disable=True, **kwargs))
