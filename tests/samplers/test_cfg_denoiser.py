"""Tests for modules/samplers/cfg_denoiser.py against hand-built references on a tiny, row-independent model.

The model's output for a row depends only on that row's inputs, so one batched call must equal per-row calls to
float rounding (checked at 1e-6 absolute on values of order 1). A1111's ``CFGDenoiser.forward`` is the behavioural
reference: batch layout ``[conds of every image] + [uncond of each image]``, AND weights, schedule selection by
denoiser call, hook order and read-back, mask blending, NGMS.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from modules.samplers.cfg_denoiser import (
    AfterCFGCallbackParams,
    CFGDenoisedParams,
    CFGDenoiser,
    CFGDenoiserParams,
    SamplingInterrupted,
    concat_image_cond,
)
from modules.samplers.timesteps import sample_ddim

ATOL = 1e-6


class RowModel:
    """x0 = 0.5 x + mean(context) + 0.1 sigma (+ mean(y)) (+ channel-mean of c_concat); records every call."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(
        self, x: Tensor, sigma: Tensor, *, context: Tensor, y: Tensor | None = None, c_concat: Tensor | None = None
    ) -> Tensor:
        self.calls.append({"x": x.clone(), "context": context.clone(), "y": y, "c_concat": c_concat, "sigma": sigma})
        out = 0.5 * x + context.mean(dim=(1, 2))[:, None, None, None] + 0.1 * sigma[:, None, None, None]
        if y is not None:
            out = out + y.mean(dim=1)[:, None, None, None]
        if c_concat is not None:
            out = out + c_concat.mean(dim=1, keepdim=True)
        return out


def ctx(value: float, tokens: int = 3, width: int = 4) -> Tensor:
    return torch.full((tokens, width), value) + torch.linspace(0, 0.1, tokens)[:, None]


def single(cond: Tensor) -> list:
    """A per-image AND list with one part of weight 1 and a one-entry schedule."""
    return [(1.0, [(100, cond)])]


@pytest.fixture
def x() -> Tensor:
    return torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0))


SIGMA = torch.tensor([2.0, 3.0])


def reference_row(x: Tensor, sigma: Tensor, context: Tensor) -> Tensor:
    return RowModel()(x[None], sigma[None], context=context[None])[0]


def test_one_batched_call_equals_separate_calls(x: Tensor):
    model = RowModel()
    conds, unconds = [ctx(1.0), ctx(2.0)], [ctx(-1.0), ctx(-2.0)]
    out = CFGDenoiser(model)(
        x, SIGMA, cond=[single(c) for c in conds], uncond=[[(100, u)] for u in unconds], cond_scale=7.0
    )
    assert len(model.calls) == 1 and model.calls[0]["x"].shape[0] == 4
    for i in range(2):
        d_cond, d_uncond = reference_row(x[i], SIGMA[i], conds[i]), reference_row(x[i], SIGMA[i], unconds[i])
        torch.testing.assert_close(out[i], d_uncond + 7.0 * (d_cond - d_uncond), atol=ATOL, rtol=0)

    chunked_model = RowModel()
    chunked = CFGDenoiser(chunked_model, max_batch=3)(
        x, SIGMA, cond=[single(c) for c in conds], uncond=[[(100, u)] for u in unconds], cond_scale=7.0
    )
    assert [c["x"].shape[0] for c in chunked_model.calls] == [3, 1]
    torch.testing.assert_close(chunked, out, atol=ATOL, rtol=0)


def test_and_weights_follow_composable_diffusion(x: Tensor):
    model = RowModel()
    a, b, c, u0, u1 = ctx(1.0), ctx(3.0), ctx(5.0), ctx(0.0), ctx(-1.0)
    cond = [[(1.0, [(100, a)]), (0.5, [(100, b)])], [(0.8, [(100, c)])]]
    out = CFGDenoiser(model)(x, SIGMA, cond=cond, uncond=[[(100, u0)], [(100, u1)]], cond_scale=5.0)
    assert model.calls[0]["x"].shape[0] == 5  # 3 conds + 2 unconds
    torch.testing.assert_close(model.calls[0]["x"][:3], torch.stack([x[0], x[0], x[1]]))
    r = [reference_row(x[0], SIGMA[0], t) for t in (a, b, u0)]
    torch.testing.assert_close(out[0], r[2] + 5.0 * (1.0 * (r[0] - r[2]) + 0.5 * (r[1] - r[2])), atol=ATOL, rtol=0)
    r1 = [reference_row(x[1], SIGMA[1], t) for t in (c, u1)]
    torch.testing.assert_close(out[1], r1[1] + 5.0 * 0.8 * (r1[0] - r1[1]), atol=ATOL, rtol=0)


def test_schedules_switch_at_end_at_step(x: Tensor):
    model = RowModel()
    first, second, neg = ctx(1.0), ctx(2.0), ctx(0.0)
    denoiser = CFGDenoiser(model)
    schedule = [(2, first), (5, second)]
    for _ in range(7):
        denoiser(x[:1], SIGMA[:1], cond=[[(1.0, schedule)]], uncond=[[(100, neg)]], cond_scale=1.0)
    used = [call["context"][0, 0, 0].item() for call in model.calls]
    assert used == [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 1.0]  # step 6 is past every entry: A1111 falls back to the first
    assert denoiser.step == 7


def test_prompt_parser_conditioning_objects_are_accepted(x: Tensor):
    from modules.prompt_parser import (
        ComposableScheduledPromptConditioning,
        MulticondLearnedConditioning,
        ScheduledPromptConditioning,
    )

    parts = [ComposableScheduledPromptConditioning([ScheduledPromptConditioning(10, ctx(1.0))], 0.5)]
    cond = MulticondLearnedConditioning(shape=(1,), batch=[parts])
    uncond = [[ScheduledPromptConditioning(10, ctx(0.0))]]
    out = CFGDenoiser(RowModel())(x[:1], SIGMA[:1], cond=cond, uncond=uncond, cond_scale=2.0)
    d_c, d_u = reference_row(x[0], SIGMA[0], ctx(1.0)), reference_row(x[0], SIGMA[0], ctx(0.0))
    torch.testing.assert_close(out[0], d_u + 2.0 * 0.5 * (d_c - d_u), atol=ATOL, rtol=0)


def test_sdxl_dict_conds_reach_the_model_as_context_and_y(x: Tensor):
    model = RowModel()

    def sdxl(value: float) -> dict:
        return {"crossattn": ctx(value, width=8), "vector": torch.full((6,), value / 10)}

    denoiser_shapes = []

    def on_denoiser(p: CFGDenoiserParams) -> None:
        denoiser_shapes.extend([tuple(p.text_cond.shape), tuple(p.text_uncond.shape)])

    out = CFGDenoiser(model, on_cfg_denoiser=on_denoiser)(
        x, SIGMA, cond=[single(sdxl(1.0)), single(sdxl(2.0))], uncond=[[(9, sdxl(0.0))]] * 2, cond_scale=3.0
    )
    call = model.calls[0]
    assert call["context"].shape == (4, 3, 8) and call["y"].shape == (4, 6)
    assert denoiser_shapes == [(2, 3, 8), (2, 3, 8)]  # hooks see A1111's DictWithShape
    torch.testing.assert_close(call["y"][:, 0], torch.tensor([0.1, 0.2, 0.0, 0.0]))
    expected_row0 = model(x[:1], SIGMA[:1], context=ctx(1.0, width=8)[None], y=torch.full((1, 6), 0.1))
    expected_uncond0 = model(x[:1], SIGMA[:1], context=ctx(0.0, width=8)[None], y=torch.zeros(1, 6))
    torch.testing.assert_close(out[:1], expected_uncond0 + 3.0 * (expected_row0 - expected_uncond0), atol=ATOL, rtol=0)


def test_different_token_lengths_run_as_separate_batches(x: Tensor):
    model = RowModel()
    long_cond, short_uncond = ctx(1.0, tokens=6), ctx(0.0, tokens=3)
    denoiser = CFGDenoiser(model)
    out = denoiser(x, SIGMA, cond=[single(long_cond)] * 2, uncond=[[(9, short_uncond)]] * 2, cond_scale=4.0)
    assert [c["context"].shape[:2] for c in model.calls] == [(2, 6), (2, 3)]
    assert not denoiser.padded_cond_uncond
    for i in range(2):
        d_c, d_u = reference_row(x[i], SIGMA[i], long_cond), reference_row(x[i], SIGMA[i], short_uncond)
        torch.testing.assert_close(out[i], d_u + 4.0 * (d_c - d_u), atol=ATOL, rtol=0)


def test_padding_options_give_one_batch(x: Tensor):
    long_cond, short_uncond, empty = ctx(1.0, tokens=6), ctx(0.0, tokens=3), ctx(9.0, tokens=3)
    model = RowModel()
    denoiser = CFGDenoiser(model, pad_cond_uncond=True, empty_cond=empty)
    denoiser(x, SIGMA, cond=[single(long_cond)] * 2, uncond=[[(9, short_uncond)]] * 2, cond_scale=4.0)
    assert len(model.calls) == 1 and denoiser.padded_cond_uncond
    torch.testing.assert_close(model.calls[0]["context"][2], torch.cat([short_uncond, empty]))

    model_v0 = RowModel()
    CFGDenoiser(model_v0, pad_cond_uncond_v0=True)(
        x, SIGMA, cond=[single(long_cond)] * 2, uncond=[[(9, short_uncond)]] * 2, cond_scale=4.0
    )
    padded = torch.cat([short_uncond, short_uncond[-1:].expand(3, -1)])
    torch.testing.assert_close(model_v0.calls[0]["context"][3], padded)


def test_conds_of_different_lengths_in_one_batch_repeat_their_last_vector(x: Tensor):
    model = RowModel()
    short, long = ctx(1.0, tokens=3), ctx(2.0, tokens=6)
    CFGDenoiser(model)(x, SIGMA, cond=[single(short), single(long)], uncond=[[(9, ctx(0.0, 6))]] * 2, cond_scale=1.0)
    torch.testing.assert_close(model.calls[0]["context"][0], torch.cat([short, short[-1:].expand(3, -1)]))


def test_hooks_run_in_order_and_their_changes_are_read_back(x: Tensor):
    model, order = RowModel(), []

    def on_denoiser(p: CFGDenoiserParams) -> None:
        order.append("denoiser")
        assert (p.sampling_step, p.total_sampling_steps) == (0, 20)
        assert p.x.shape[0] == 4 and p.text_cond.shape == (2, 3, 4) and p.text_uncond.shape == (2, 3, 4)
        assert isinstance(p.denoiser, CFGDenoiser)
        p.x = torch.zeros_like(p.x)

    def on_denoised(p: CFGDenoisedParams) -> None:
        order.append("denoised")
        assert p.inner_model is model
        p.x = p.x * 2

    def on_after(p: AfterCFGCallbackParams) -> None:
        order.append("after")
        p.x = p.x + 1

    denoiser = CFGDenoiser(
        model, on_cfg_denoiser=on_denoiser, on_cfg_denoised=on_denoised, on_cfg_after_cfg=on_after,
        total_sampling_steps=20,
    )
    out = denoiser(x, SIGMA, cond=[single(ctx(1.0))] * 2, uncond=[[(9, ctx(0.0))]] * 2, cond_scale=3.0)
    assert order == ["denoiser", "denoised", "after"]
    assert torch.count_nonzero(model.calls[0]["x"]) == 0
    zeros = torch.zeros_like(x[0])
    for i in range(2):
        d_c, d_u = (2 * reference_row(zeros, SIGMA[i], c) for c in (ctx(1.0), ctx(0.0)))
        torch.testing.assert_close(out[i], d_u + 3.0 * (d_c - d_u) + 1, atol=ATOL, rtol=0)


def test_mask_blends_guided_x0_with_init_latent(x: Tensor):
    init = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    mask = (torch.arange(16).reshape(1, 1, 4, 4) % 2).float().expand(2, 1, 4, 4)
    plain = CFGDenoiser(RowModel())
    args = {"cond": [single(ctx(1.0))] * 2, "uncond": [[(9, ctx(0.0))]] * 2, "cond_scale": 3.0}
    unmasked = plain(x, SIGMA, **args)
    masked = CFGDenoiser(RowModel())
    masked.init_latent, masked.mask, masked.nmask = init, mask, 1 - mask
    torch.testing.assert_close(masked(x, SIGMA, **args), unmasked * (1 - mask) + init * mask)


def test_mask_before_denoising_reproduces_a1111_ddim_inpainting(x: Tensor):
    """A1111's timestep samplers blend the VP input with the un-noised init and step with the model's eps."""
    alphas_cumprod = torch.linspace(0.999, 0.01, 1000, dtype=torch.float64)
    init = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    mask = (torch.arange(16).reshape(1, 1, 4, 4) % 2).float().expand(2, 1, 4, 4)

    def eps_model(x_t: Tensor, context: Tensor) -> Tensor:
        return torch.tanh(x_t) + context.mean(dim=(1, 2))[:, None, None, None]

    def k_model(x_ve: Tensor, sigma: Tensor, *, context: Tensor) -> Tensor:
        c_in = (1 / (1 + sigma**2).sqrt())[:, None, None, None]
        return x_ve - sigma[:, None, None, None] * eps_model(x_ve * c_in, context)

    denoiser = CFGDenoiser(k_model, mask_before_denoising=True)
    denoiser.init_latent, denoiser.mask, denoiser.nmask = init, mask, 1 - mask
    cond, uncond = [single(ctx(0.3))] * 2, [[(9, ctx(-0.2))]] * 2
    timesteps = torch.tensor([1, 501])
    out = sample_ddim(
        denoiser, x, timesteps, {"cond": cond, "uncond": uncond, "cond_scale": 2.0},
        alphas_cumprod=alphas_cumprod, disable=True,
    )
    a, a_prev = float(alphas_cumprod[501]), float(alphas_cumprod[1])
    blended = x * (1 - mask) + init * mask
    e_c = eps_model(blended, ctx(0.3)[None].expand(2, -1, -1))
    e_u = eps_model(blended, ctx(-0.2)[None].expand(2, -1, -1))
    e_t = e_u + 2.0 * (e_c - e_u)
    pred_x0 = (x - math.sqrt(1 - a) * e_t) / math.sqrt(a)
    torch.testing.assert_close(out, math.sqrt(a_prev) * pred_x0 + math.sqrt(1 - a_prev) * e_t, atol=1e-5, rtol=1e-5)


def test_image_cond_is_repeated_per_row_and_concatenated_to_channels(x: Tensor):
    seen = {}

    def unet(x_in: Tensor, t: Tensor, *, context: Tensor) -> Tensor:
        seen["channels"] = x_in.shape[1]
        seen["extra"] = x_in[:, 4:].clone()
        return x_in[:, :4] * 0.5 + context.mean(dim=(1, 2))[:, None, None, None]

    wrapped = concat_image_cond(unet)

    def k_model(x_ve: Tensor, sigma: Tensor, **kwargs) -> Tensor:
        return wrapped(x_ve, sigma, **kwargs)

    image_cond = torch.randn(2, 5, 4, 4, generator=torch.Generator().manual_seed(4))
    cond = [[(1.0, [(9, ctx(1.0))]), (1.0, [(9, ctx(2.0))])], single(ctx(3.0))]
    CFGDenoiser(k_model)(x, SIGMA, cond=cond, uncond=[[(9, ctx(0.0))]] * 2, cond_scale=2.0, image_cond=image_cond)
    assert seen["channels"] == 9
    torch.testing.assert_close(seen["extra"], image_cond[[0, 0, 1, 0, 1]])


def test_interrupt_stops_sampling(x: Tensor):
    calls = {"n": 0}

    def interrupted() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    denoiser = CFGDenoiser(RowModel(), interrupted=interrupted)
    args = {"cond": [single(ctx(1.0))] * 2, "uncond": [[(9, ctx(0.0))]] * 2, "cond_scale": 3.0}
    denoiser(x, SIGMA, **args)
    denoiser(x, SIGMA, **args)
    with pytest.raises(SamplingInterrupted):
        denoiser(x, SIGMA, **args)
    assert denoiser.step == 2 and denoiser.last_latent.shape == x.shape


def test_s_min_uncond_skips_uncond_on_odd_steps_below_threshold(x: Tensor):
    model = RowModel()
    denoiser = CFGDenoiser(model)
    args = {"cond": [single(ctx(1.0))] * 2, "uncond": [[(9, ctx(0.0))]] * 2, "cond_scale": 3.0, "s_min_uncond": 5.0}
    denoiser(x, SIGMA, **args)  # step 0: even, full CFG
    out = denoiser(x, SIGMA, **args)  # step 1: odd and sigma < 5: conds only, no guidance
    assert [c["x"].shape[0] for c in model.calls] == [4, 2]
    for i in range(2):
        torch.testing.assert_close(out[i], reference_row(x[i], SIGMA[i], ctx(1.0)), atol=ATOL, rtol=0)


def test_live_preview_every_n_sampler_steps(x: Tensor):
    previews = []
    denoiser = CFGDenoiser(RowModel(), on_preview=lambda latent, step: previews.append((step, latent)), preview_every=2)
    args = {"cond": [single(ctx(1.0))] * 2, "uncond": [[(9, ctx(0.0))]] * 2, "cond_scale": 3.0}
    for i in range(5):
        denoiser(x, SIGMA, **args)
        denoiser.sampler_callback({"i": i + 1})
    assert [step for step, _ in previews] == [0, 2, 4]
    torch.testing.assert_close(previews[0][1][1], reference_row(x[1], SIGMA[1], ctx(1.0)), atol=ATOL, rtol=0)


def test_cfgpp_protocol_keeps_uncond_and_scales_guidance(x: Tensor):
    denoiser = CFGDenoiser(RowModel())
    denoiser.cond_scale_multiplier, denoiser.keep_uncond_denoised = 0.5, True
    out = denoiser(x, SIGMA, cond=[single(ctx(1.0))] * 2, uncond=[[(9, ctx(0.0))]] * 2, cond_scale=4.0)
    d_c, d_u = reference_row(x[0], SIGMA[0], ctx(1.0)), reference_row(x[0], SIGMA[0], ctx(0.0))
    torch.testing.assert_close(denoiser.last_uncond_denoised[0], d_u, atol=ATOL, rtol=0)
    torch.testing.assert_close(out[0], d_u + 2.0 * (d_c - d_u), atol=ATOL, rtol=0)
