"""Classifier-free guidance as a k-diffusion denoiser: the ``model`` every sampler calls (A1111's ``CFGDenoiser``).

Per call it picks each prompt's conditioning for the current step (prompt editing ``[a:b:when]`` and AND parts come
as A1111-style schedules), runs the inner denoiser once over ``[every cond of every image] + [uncond of each image]``
(in chunks when ``max_batch`` asks, and as separate batches when cond and uncond differ in token length), and combines
``denoised = uncond + sum_i w_i * cfg * (cond_i - uncond)`` (composable diffusion). Around that sit A1111's extension
hooks (``on_cfg_denoiser`` / ``on_cfg_denoised`` / ``on_cfg_after_cfg``, given as callables), inpainting latent
blending, an interrupt check and live previews.

Conditioning formats (tensors have no batch dimension; SDXL conds are dicts such as
``{"crossattn": [T, 2048], "vector": [2816]}``):

* ``cond``: per image, a list of AND parts ``(weight, schedule)``; or a ``MulticondLearnedConditioning`` from
  :mod:`modules.prompt_parser` (``.batch`` of parts with ``.weight`` and ``.schedules``).
* ``uncond``: per image, a schedule.
* a schedule is a list of ``(end_at_step, cond)`` (``ScheduledPromptConditioning`` works): at denoiser call ``step``
  the first entry with ``step <= end_at_step`` is used (the first entry if none). ``step`` counts denoiser calls,
  which is why the prompt schedule of a second-order sampler is built for twice the steps.

The inner model is called as ``inner_model(x, sigma, context=..., [y=...], [c_concat=image_cond])``: a dict cond's
``crossattn`` becomes ``context`` and ``vector`` becomes ``y``, other keys pass through by name. Wrap a UNet with
:func:`concat_image_cond` so that inpainting models receive ``[x, mask, masked-image latent]`` along channels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from modules.prompt_parser import DictWithShape

Cond = Tensor | dict[str, Tensor]
Schedule = Sequence[Any]  # of (end_at_step, cond) pairs / ScheduledPromptConditioning
Denoiser = Callable[..., Tensor]
PreviewContent = Literal["Prompt", "Negative prompt", "Combined"]


class SamplingInterrupted(Exception):
    """Raised inside the sampler loop when the user interrupts or skips; the caller keeps ``last_latent``."""


@dataclass
class CFGDenoiserParams:
    """``on_cfg_denoiser``: before the model call. x, image_cond, sigma, text_cond and text_uncond are read back."""

    x: Tensor
    image_cond: Tensor | None
    sigma: Tensor
    sampling_step: int
    total_sampling_steps: int
    text_cond: Cond
    text_uncond: Cond
    denoiser: Any = None


@dataclass
class CFGDenoisedParams:
    """``on_cfg_denoised``: model outputs (x0 per row: conds then unconds) before guidance; x is read back."""

    x: Tensor
    sampling_step: int
    total_sampling_steps: int
    inner_model: Any


@dataclass
class AfterCFGCallbackParams:
    """``on_cfg_after_cfg``: the guided x0 per image; x is read back."""

    x: Tensor
    sampling_step: int
    total_sampling_steps: int


def concat_image_cond(model_fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Wrap ``model_fn(x, t, **kw)`` so a ``c_concat`` kwarg is concatenated to the (already scaled) input channels.

    Inpainting UNets take 9 channels: the noisy latent, then the mask and the masked-image latent (unscaled). The
    concatenation must come after the denoiser's ``c_in`` scaling, hence a wrapper for the function it calls.
    """

    def with_image_cond(x: Tensor, t: Tensor, *, c_concat: Tensor | None = None, **kwargs: Any) -> Tensor:
        if c_concat is not None:
            x = torch.cat([x, c_concat.to(x)], dim=1)
        return model_fn(x, t, **kwargs)

    return with_image_cond


def _entry_at(schedule: Schedule, step: int) -> Cond:
    """A1111's rule: the first entry whose end_at_step >= step, else the first entry."""
    for end_at_step, cond in schedule:
        if step <= end_at_step:
            return cond
    return schedule[0][1]


def _pad_tokens(tensor: Tensor, tokens: int) -> Tensor:
    """Repeat the last token vector up to ``tokens`` (A1111 does this within a batch of conds)."""
    missing = tokens - tensor.shape[0]
    return torch.cat([tensor, tensor[-1:].expand(missing, *tensor.shape[1:])]) if missing > 0 else tensor


def stack_conds(conds: Sequence[Cond]) -> Cond:
    """Batch per-prompt conds; shorter cross-attention contexts are padded by repeating their last vector."""
    if isinstance(conds[0], dict):  # keeps A1111's ``.shape`` on SDXL conds for extensions
        return DictWithShape({key: stack_conds([c[key] for c in conds]) for key in conds[0]})
    if conds[0].dim() < 2:  # pooled vectors (SDXL "vector") have no token axis
        return torch.stack(list(conds))
    tokens = max(c.shape[0] for c in conds)
    return torch.stack([_pad_tokens(c, tokens) for c in conds])


def cat_conds(conds: Sequence[Cond]) -> Cond:
    if isinstance(conds[0], dict):
        return DictWithShape({key: torch.cat([c[key] for c in conds]) for key in conds[0]})
    return torch.cat(list(conds))


def slice_cond(cond: Cond, start: int, end: int) -> Cond:
    if isinstance(cond, dict):
        return {key: value[start:end] for key, value in cond.items()}
    return cond[start:end]


def _tokens(cond: Cond) -> int:
    return (cond["crossattn"] if isinstance(cond, dict) else cond).shape[1]


def _rows(cond: Cond) -> int:
    return (cond["crossattn"] if isinstance(cond, dict) else cond).shape[0]


def _pad_with(cond: Cond, repeats: int, empty: Tensor) -> Cond:
    """Append ``repeats`` copies of the empty-prompt encoding to the context (A1111's ``pad_cond_uncond``)."""
    if isinstance(cond, dict):
        return {**cond, "crossattn": _pad_with(cond["crossattn"], repeats, empty)}
    empty = empty.reshape(1, -1, empty.shape[-1]).to(cond)
    return torch.cat([cond, empty.repeat(cond.shape[0], repeats, 1)], dim=1)


def _fit_last_vector(uncond: Cond, tokens: int) -> Cond:
    """A1111's ``pad_cond_uncond_v0``: repeat the uncond's last vector, or truncate, to ``tokens``."""
    if isinstance(uncond, dict):
        return {**uncond, "crossattn": _fit_last_vector(uncond["crossattn"], tokens)}
    if uncond.shape[1] >= tokens:
        return uncond[:, :tokens]
    return torch.cat([uncond, uncond[:, -1:].expand(-1, tokens - uncond.shape[1], -1)], dim=1)


def model_kwargs(cond: Cond, image_cond: Tensor | None) -> dict[str, Tensor]:
    """The inner model's conditioning kwargs: ``context``, SDXL's ``y``, and ``c_concat`` for inpainting models."""
    if isinstance(cond, dict):
        names = {"crossattn": "context", "vector": "y"}
        kwargs = {names.get(key, key): value for key, value in cond.items()}
    else:
        kwargs = {"context": cond}
    if image_cond is not None:
        kwargs["c_concat"] = image_cond
    return kwargs


def _multicond_parts(cond: Any) -> list[list[tuple[float, Schedule]]]:
    """Normalise ``MulticondLearnedConditioning`` or per-image lists of (weight, schedule) to the latter."""
    batch = getattr(cond, "batch", cond)
    return [
        [(part.weight, part.schedules) if hasattr(part, "schedules") else (float(part[0]), part[1]) for part in parts]
        for parts in batch
    ]


def multicond_at(cond: Any, step: int) -> tuple[list[list[tuple[int, float]]], Cond]:
    """(per image ``[(row, weight), ...]``, every image's AND-part conds stacked) at denoiser call ``step``."""
    rows: list[Cond] = []
    conds_list = []
    for parts in _multicond_parts(cond):
        conds_list.append([(len(rows) + i, weight) for i, (weight, _) in enumerate(parts)])
        rows.extend(_entry_at(schedule, step) for _, schedule in parts)
    return conds_list, stack_conds(rows)


def uncond_at(uncond: Sequence[Schedule], step: int) -> Cond:
    """Each image's negative-prompt cond at denoiser call ``step``, stacked."""
    return stack_conds([_entry_at(schedule, step) for schedule in uncond])


def combine_denoised(x_out: Tensor, conds_list: list[list[tuple[int, float]]], cond_scale: float) -> Tensor:
    """Composable-diffusion CFG: ``uncond + sum_i w_i * cond_scale * (cond_i - uncond)`` per image."""
    n_images = len(conds_list)
    denoised_uncond = x_out[-n_images:]
    denoised = denoised_uncond.clone()
    for i, conds in enumerate(conds_list):
        for row, weight in conds:
            denoised[i] += (x_out[row] - denoised_uncond[i]) * (weight * cond_scale)
    return denoised


class CFGDenoiser:
    """Guided denoiser ``(x, sigma, *, cond, uncond, cond_scale, image_cond=None, s_min_uncond=0) -> x0``.

    State a sampling run reads or sets:

    * ``step``: denoiser calls so far (selects scheduled prompts); ``sampling_step``: the sampler's step index as
      A1111's ``state.sampling_step`` (call :meth:`sampler_callback` from the sampler callback to keep it current);
      ``total_sampling_steps`` (reported to hooks) and ``total_steps`` (expected denoiser calls, for
      ``skip_early_cond``).
    * Inpainting: ``init_latent``, ``mask`` (1 = keep original) and ``nmask`` (= 1 - mask). By default the guided x0
      is blended, ``x0 * nmask + init_latent * mask`` (A1111's k-diffusion samplers). With
      ``mask_before_denoising`` (A1111's timestep samplers) the *model input* is blended with the un-noised init in
      VP terms instead, ``x_t * nmask + init * mask``, i.e. ``x * nmask + init * sqrt(1 + sigma^2) * mask`` here, and
      the returned x0 is shifted back so the sampler's implied eps is the model's, as A1111's eps-space samplers see.
    * CFG++ (``sample_ddim_cfgpp``) sets ``cond_scale_multiplier`` and ``keep_uncond_denoised`` and reads
      ``last_uncond_denoised``. ``last_latent`` is each image's x0 for its first prompt (what an interrupted run
      shows); ``padded_cond_uncond`` tells the caller to write "Pad conds" to the infotext.
    """

    def __init__(
        self,
        inner_model: Denoiser,
        *,
        on_cfg_denoiser: Callable[[CFGDenoiserParams], None] | None = None,
        on_cfg_denoised: Callable[[CFGDenoisedParams], None] | None = None,
        on_cfg_after_cfg: Callable[[AfterCFGCallbackParams], None] | None = None,
        interrupted: Callable[[], bool] | None = None,
        on_preview: Callable[[Tensor, int], None] | None = None,
        preview_every: int = 0,
        preview_content: PreviewContent = "Prompt",
        max_batch: int | None = None,
        total_sampling_steps: int = 0,
        total_steps: int | None = None,
        s_min_uncond_all: bool = False,
        skip_early_cond: float = 0.0,
        pad_cond_uncond: bool = False,
        pad_cond_uncond_v0: bool = False,
        empty_cond: Tensor | None = None,
        mask_before_denoising: bool = False,
    ) -> None:
        self.inner_model = inner_model
        self.on_cfg_denoiser = on_cfg_denoiser
        self.on_cfg_denoised = on_cfg_denoised
        self.on_cfg_after_cfg = on_cfg_after_cfg
        self.interrupted = interrupted
        self.on_preview = on_preview
        self.preview_every = preview_every
        self.preview_content = preview_content
        self.max_batch = max_batch
        self.total_sampling_steps = total_sampling_steps
        self.total_steps = total_steps
        self.s_min_uncond_all = s_min_uncond_all
        self.skip_early_cond = skip_early_cond
        self.pad_cond_uncond = pad_cond_uncond
        self.pad_cond_uncond_v0 = pad_cond_uncond_v0
        self.empty_cond = empty_cond
        self.mask_before_denoising = mask_before_denoising

        self.init_latent: Tensor | None = None
        self.mask: Tensor | None = None
        self.nmask: Tensor | None = None
        self.step = 0
        self.sampling_step = 0
        self.cond_scale_multiplier = 1.0
        self.keep_uncond_denoised = False
        self.last_uncond_denoised: Tensor | None = None
        self.last_latent: Tensor | None = None
        self.padded_cond_uncond = False
        self._last_preview_step: int | None = None

    def sampler_callback(self, d: dict[str, Any]) -> None:
        """Track the sampler's step index from its callback dict (A1111's ``callback_state``)."""
        self.sampling_step = int(d["i"])

    def _run_model(self, x: Tensor, sigma: Tensor, cond: Cond, image_cond: Tensor | None) -> Tensor:
        """The inner model over a batch, ``max_batch`` rows at a time."""
        chunk = self.max_batch or x.shape[0]
        outs = []
        for start in range(0, x.shape[0], chunk):
            end = min(start + chunk, x.shape[0])
            part_image_cond = None if image_cond is None else image_cond[start:end]
            kwargs = model_kwargs(slice_cond(cond, start, end), part_image_cond)
            outs.append(self.inner_model(x[start:end], sigma[start:end], **kwargs))
        return torch.cat(outs)

    def _fit_lengths(self, cond: Cond, uncond: Cond) -> tuple[Cond, Cond]:
        self.padded_cond_uncond = False
        if _tokens(cond) == _tokens(uncond):
            return cond, uncond
        if self.pad_cond_uncond_v0:
            self.padded_cond_uncond = True
            return cond, _fit_last_vector(uncond, _tokens(cond))
        if self.pad_cond_uncond and self.empty_cond is not None:
            repeats = (_tokens(cond) - _tokens(uncond)) // self.empty_cond.shape[-2]
            if repeats:
                self.padded_cond_uncond = True
            if repeats < 0:
                return _pad_with(cond, -repeats, self.empty_cond), uncond
            if repeats > 0:
                return cond, _pad_with(uncond, repeats, self.empty_cond)
        return cond, uncond

    def _skip_uncond(self, sigma: Tensor, s_min_uncond: float) -> bool:
        """A1111's "skip early CFG" and NGMS (``s_min_uncond``, every other call unless ``s_min_uncond_all``)."""
        if self.skip_early_cond and self.total_steps and self.step / self.total_steps <= self.skip_early_cond:
            return True
        alternate = self.step % 2 == 1 or self.s_min_uncond_all
        return bool(alternate and s_min_uncond > 0 and float(sigma[0]) < s_min_uncond)

    def _blend_input(self, x: Tensor, sigma: Tensor) -> Tensor:
        scale = (1 + sigma.to(x.dtype) ** 2).sqrt().reshape(-1, *([1] * (x.dim() - 1)))
        return x * self.nmask + self.init_latent * scale * self.mask

    def _denoise_rows(
        self,
        x_in: Tensor,
        sigma_in: Tensor,
        image_cond_in: Tensor | None,
        text_cond: Cond,
        text_uncond: Cond,
        conds_list: list[list[tuple[int, float]]],
        skip_uncond: bool,
    ) -> Tensor:
        """x0 for every cond row then every uncond row: one batch, or two when the token lengths differ."""
        n_cond = _rows(text_cond)
        ic_cond = None if image_cond_in is None else image_cond_in[:n_cond]
        if skip_uncond:
            x_out = self._run_model(x_in[:n_cond], sigma_in[:n_cond], text_cond, ic_cond)
            first_rows = [conds[0][0] for conds in conds_list]
            return torch.cat([x_out, x_out[first_rows]])  # the cond x0 stands in for the skipped uncond
        text_cond, text_uncond = self._fit_lengths(text_cond, text_uncond)
        if _tokens(text_cond) == _tokens(text_uncond):
            return self._run_model(x_in, sigma_in, cat_conds([text_cond, text_uncond]), image_cond_in)
        ic_uncond = None if image_cond_in is None else image_cond_in[n_cond:]
        cond_out = self._run_model(x_in[:n_cond], sigma_in[:n_cond], text_cond, ic_cond)
        return torch.cat([cond_out, self._run_model(x_in[n_cond:], sigma_in[n_cond:], text_uncond, ic_uncond)])

    def __call__(self, x: Tensor, sigma: Tensor, **kwargs: Any) -> Tensor:
        return self.forward(x, sigma, **kwargs)

    def forward(
        self,
        x: Tensor,
        sigma: Tensor,
        *,
        cond: Any,
        uncond: Sequence[Schedule],
        cond_scale: float,
        image_cond: Tensor | None = None,
        s_min_uncond: float = 0.0,
    ) -> Tensor:
        """Guided x0 for the batch ``x`` at noise levels ``sigma`` ([batch])."""
        if self.interrupted is not None and self.interrupted():
            raise SamplingInterrupted
        conds_list, text_cond = multicond_at(cond, self.step)
        text_uncond = uncond_at(uncond, self.step)
        n_images = len(conds_list)
        masked = self.mask is not None and self.init_latent is not None
        shift = None
        if masked and self.mask_before_denoising:
            blended = self._blend_input(x, sigma)
            shift, x = x - blended, blended

        repeats = torch.tensor([len(conds) for conds in conds_list], device=x.device)
        x_in = torch.cat([x.repeat_interleave(repeats, dim=0), x])
        sigma_in = torch.cat([sigma.repeat_interleave(repeats, dim=0), sigma])
        image_cond_in = None
        if image_cond is not None:
            image_cond_in = torch.cat([image_cond.repeat_interleave(repeats, dim=0), image_cond])

        params = CFGDenoiserParams(
            x_in, image_cond_in, sigma_in, self.sampling_step, self.total_sampling_steps, text_cond, text_uncond, self
        )
        if self.on_cfg_denoiser is not None:
            self.on_cfg_denoiser(params)
        x_in, image_cond_in, sigma_in = params.x, params.image_cond, params.sigma
        text_cond, text_uncond = params.text_cond, params.text_uncond

        skip_uncond = self._skip_uncond(sigma, s_min_uncond)
        x_out = self._denoise_rows(x_in, sigma_in, image_cond_in, text_cond, text_uncond, conds_list, skip_uncond)

        denoised_params = CFGDenoisedParams(x_out, self.sampling_step, self.total_sampling_steps, self.inner_model)
        if self.on_cfg_denoised is not None:
            self.on_cfg_denoised(denoised_params)
        x_out = denoised_params.x
        model_x0 = x_out
        if shift is not None:
            x_out = x_out + torch.cat([shift.repeat_interleave(repeats, dim=0), shift])
        if self.keep_uncond_denoised:
            self.last_uncond_denoised = x_out[-n_images:].clone()

        scale = 1.0 if skip_uncond else cond_scale * self.cond_scale_multiplier
        denoised = combine_denoised(x_out, conds_list, scale)
        if masked and not self.mask_before_denoising:
            denoised = denoised * self.nmask + self.init_latent * self.mask

        first_rows = [conds[0][0] for conds in conds_list]
        self.last_latent = model_x0[first_rows]
        self._preview(model_x0, denoised if shift is None else denoised - shift, first_rows)

        after_params = AfterCFGCallbackParams(denoised, self.sampling_step, self.total_sampling_steps)
        if self.on_cfg_after_cfg is not None:
            self.on_cfg_after_cfg(after_params)
        self.step += 1
        return after_params.x

    def _preview(self, model_x0: Tensor, combined: Tensor, first_rows: list[int]) -> None:
        """Hand the live preview its latent every ``preview_every`` sampler steps (A1111's ``live_preview_content``)."""
        if self.on_preview is None or self.preview_every <= 0 or self.sampling_step % self.preview_every:
            return
        if self._last_preview_step == self.sampling_step:
            return
        self._last_preview_step = self.sampling_step
        if self.preview_content == "Negative prompt":
            latent = model_x0[-len(first_rows) :]
        elif self.preview_content == "Combined":
            latent = combined
        else:
            latent = model_x0[first_rows]
        self.on_preview(latent, self.sampling_step)
