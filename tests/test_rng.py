"""Tests for modules/rng.py against A1111's rng.py rules (per-image generators, slerp variation, seed resize paste,
ENSD re-seeding). The reference values are plain `torch.Generator(seed)` draws, which is what A1111's CPU source does;
comparisons are exact except where slerp's trigonometry allows float rounding (atol 1e-5)."""

from __future__ import annotations

import pytest
import torch

from modules import rng, shared
from modules.rng import ImageRNG, get_fixed_seed, slerp

SHAPE = (4, 8, 8)


@pytest.fixture(autouse=True)
def no_global_opts(monkeypatch):
    monkeypatch.setattr(shared, "opts", None)
    monkeypatch.setattr(shared, "device", None)


def draws(seed: int, shape=SHAPE, n: int = 1) -> list[torch.Tensor]:
    gen = torch.Generator("cpu").manual_seed(seed)
    return [torch.randn(shape, generator=gen) for _ in range(n)]


def make(seeds, **kwargs) -> ImageRNG:
    kwargs.setdefault("randn_source", "CPU")
    kwargs.setdefault("eta_noise_seed_delta", 0)
    return ImageRNG(SHAPE, seeds, **kwargs)


def test_first_draw_is_each_seeds_own_noise_regardless_of_batch():
    batch = make([10, 11, 12])
    first, second = batch.first(), batch.next()
    assert first.shape == (3, *SHAPE) and first.dtype == torch.float32
    for i, seed in enumerate([10, 11, 12]):
        expected = draws(seed, n=2)
        assert torch.equal(first[i], expected[0]) and torch.equal(second[i], expected[1])
    alone = make([11])
    assert torch.equal(alone.next()[0], first[1]) and torch.equal(alone.next()[0], second[1])


def test_deterministic_and_seed_dependent():
    assert torch.equal(make([5, 6]).next(), make([5, 6]).next())
    assert not torch.equal(make([5]).next(), make([7]).next())


def test_variation_strength_endpoints_and_middle():
    seed_noise, sub_noise = draws(3)[0], draws(99)[0]
    zero = make([3], subseeds=[99], subseed_strength=0.0).first()[0]
    assert torch.equal(zero, seed_noise)  # strength 0 never touches the subseed
    one = make([3], subseeds=[99], subseed_strength=1.0).first()[0]
    torch.testing.assert_close(one, sub_noise, atol=1e-5, rtol=0)
    half = make([3], subseeds=[99], subseed_strength=0.5).first()[0]
    torch.testing.assert_close(half, slerp(0.5, seed_noise, sub_noise))
    assert not torch.allclose(half, seed_noise) and not torch.allclose(half, sub_noise)
    # later draws still come from the image seed's generator
    rng_ = make([3], subseeds=[99], subseed_strength=0.5)
    rng_.first()
    assert torch.equal(rng_.next()[0], draws(3, n=2)[1])


def test_slerp_matches_a1111_formula():
    low, high = draws(1)[0], draws(2)[0]
    low_n = low / torch.norm(low, dim=1, keepdim=True)
    high_n = high / torch.norm(high, dim=1, keepdim=True)
    omega = torch.acos((low_n * high_n).sum(1))
    so = torch.sin(omega)
    expected = (torch.sin(0.7 * omega) / so).unsqueeze(1) * low + (torch.sin(0.3 * omega) / so).unsqueeze(1) * high
    torch.testing.assert_close(slerp(0.3, low, high), expected)
    # (nearly) parallel inputs: A1111's linear fallback, weights as A1111 wrote them
    torch.testing.assert_close(slerp(0.25, low, low * 2), low * 0.25 + low * 2 * 0.75)


def test_seed_resize_pastes_old_size_noise_centred():
    # new latent 8x8, noise drawn at 4x4 (32x32 px) and pasted at [2:6, 2:6] over fresh 8x8 noise
    x = make([42], seed_resize_from_h=32, seed_resize_from_w=32).first()[0]
    fresh, small = draws(42)[0], draws(42, (4, 4, 4))[0]
    assert torch.equal(x[:, 2:6, 2:6], small)
    mask = torch.ones(8, 8, dtype=torch.bool)
    mask[2:6, 2:6] = False
    assert torch.equal(x[:, mask], fresh[:, mask])

    # old size larger than new (16x12 latent): the centre of the old noise is cropped in
    x = make([42], seed_resize_from_h=128, seed_resize_from_w=96).first()[0]
    big = draws(42, (4, 16, 12))[0]
    assert torch.equal(x, big[:, 4:12, 2:10])


def test_seed_resize_with_variation_blends_at_old_size():
    x = make([1], subseeds=[2], subseed_strength=1.0, seed_resize_from_h=32, seed_resize_from_w=32).first()[0]
    torch.testing.assert_close(x[:, 2:6, 2:6], draws(2, (4, 4, 4))[0], atol=1e-5, rtol=0)


def test_ensd_reseeds_after_first_draw():
    image_rng = make([100, 200], eta_noise_seed_delta=31337)
    first, second, third = image_rng.next(), image_rng.next(), image_rng.next()
    for i, seed in enumerate([100, 200]):
        assert torch.equal(first[i], draws(seed)[0])
        after = draws(seed + 31337, n=2)
        assert torch.equal(second[i], after[0]) and torch.equal(third[i], after[1])


def test_ensd_read_from_settings(monkeypatch):
    monkeypatch.setattr(shared, "opts", type("Opts", (), {"eta_noise_seed_delta": 5, "randn_source": "CPU"})())
    image_rng = ImageRNG(SHAPE, [1])
    image_rng.next()
    assert image_rng.randn_source == "CPU" and torch.equal(image_rng.next()[0], draws(6)[0])


def test_noise_sampler_and_randn_like_continue_the_stream():
    image_rng = make([8])
    first = image_rng.first()
    sampler = image_rng.noise_sampler()
    expected = draws(8, n=3)
    assert torch.equal(sampler(torch.tensor(1.0), torch.tensor(0.5))[0], expected[1])
    assert torch.equal(image_rng.randn_like(first.half()).float()[0], expected[2].half().float())
    with pytest.raises(ValueError):
        image_rng.randn_like(torch.zeros(2, *SHAPE))


def test_gpu_source_on_cpu_device_and_dtype():
    x = ImageRNG(SHAPE, [4], randn_source="GPU", eta_noise_seed_delta=0, device="cpu", dtype=torch.float16).first()
    assert x.dtype == torch.float16 and torch.equal(x[0], draws(4)[0].half())


def test_module_helpers():
    assert torch.equal(rng.randn_local(9, SHAPE), draws(9)[0])
    assert rng.create_generator(1, source="CPU").device.type == "cpu"
    assert rng.generator_device("GPU", torch.device("mps")).type == "cpu"


@pytest.mark.parametrize("value", [-1, None, "", "abc", 1.5, "-1"])
def test_get_fixed_seed_randomises(value):
    seed = get_fixed_seed(value)
    assert isinstance(seed, int) and 0 <= seed < 4294967294


def test_get_fixed_seed_keeps_given_seed():
    assert get_fixed_seed(5) == 5 and get_fixed_seed("7") == 7 and get_fixed_seed(3.0) == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sources_on_cuda():
    cuda = torch.device("cuda")
    gpu = ImageRNG(SHAPE, [3], randn_source="GPU", eta_noise_seed_delta=0, device=cuda).first()
    expected = torch.randn(SHAPE, generator=torch.Generator(cuda).manual_seed(3), device=cuda)
    assert gpu.device.type == "cuda" and torch.equal(gpu[0], expected)
    cpu = ImageRNG(SHAPE, [3], randn_source="CPU", eta_noise_seed_delta=0, device=cuda).first()
    assert cpu.device.type == "cuda" and torch.equal(cpu[0].cpu(), draws(3)[0])
