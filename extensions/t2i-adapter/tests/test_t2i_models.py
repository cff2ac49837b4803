"""T2I-Adapter architectures and loading: released key layouts load strictly, feature shapes fit the UNet, other
layouts (``module.``/``adapter.`` prefixes, ``state_dict`` wrappers, .safetensors, diffusers folders) convert, and
files that are not adapters get a clear error.

The released layouts below are written out from the reference tables (t2i-adapter.md §1.2-1.6, with their
published tensor and parameter counts), independently of the model code. Full-size shape checks run on the meta
device (no memory, no compute).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from t2i_adapter import AdapterFormatError, guess_condition, list_adapter_files, load_adapter  # noqa: E402
from t2i_adapter.adapter_full import Adapter, FullAdapterConfig  # noqa: E402
from t2i_adapter.loading import module_from_state_dict  # noqa: E402

from modules.sd.unet import SD15_UNET, SDXL_UNET, UNetModel  # noqa: E402

# ------------------------------------------------------------------------------- released layouts (reference §1)


def full_layout(cin: int) -> dict[str, tuple[int, ...]]:
    """SD1.x Adapter / SDXL Adapter_XL (same keys, cin 64/192 vs 256/768): nums_rb 2, ksize 1, sk, avg-pool."""
    shapes: dict[str, tuple[int, ...]] = {"conv_in.weight": (320, cin, 3, 3), "conv_in.bias": (320,)}
    widths = [320, 320, 640, 640, 1280, 1280, 1280, 1280]
    for i, c in enumerate(widths):
        if i in (2, 4):
            shapes |= {f"body.{i}.in_conv.weight": (c, widths[i - 1], 1, 1), f"body.{i}.in_conv.bias": (c,)}
        shapes |= {f"body.{i}.block1.weight": (c, c, 3, 3), f"body.{i}.block1.bias": (c,),
                   f"body.{i}.block2.weight": (c, c, 1, 1), f"body.{i}.block2.bias": (c,)}
    return shapes


def light_layout() -> dict[str, tuple[int, ...]]:
    """Adapter_light (colour): cin 192, 4 residual blocks per level at a quarter width."""
    shapes: dict[str, tuple[int, ...]] = {}
    for i, (c_in, inter, c_out) in enumerate([(192, 80, 320), (320, 160, 640), (640, 320, 1280), (1280, 320, 1280)]):
        shapes |= {f"body.{i}.in_conv.weight": (inter, c_in, 1, 1), f"body.{i}.in_conv.bias": (inter,),
                   f"body.{i}.out_conv.weight": (c_out, inter, 1, 1), f"body.{i}.out_conv.bias": (c_out,)}
        for j in range(4):
            for b in (1, 2):
                shapes |= {f"body.{i}.body.{j}.block{b}.weight": (inter, inter, 3, 3),
                           f"body.{i}.body.{j}.block{b}.bias": (inter,)}
    return shapes


def transformer_layout(width: int, layers: int = 3) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for n in range(layers):
        p = f"transformer_layes.{n}."
        shapes |= {p + "attn.in_proj_weight": (3 * width, width), p + "attn.in_proj_bias": (3 * width,),
                   p + "attn.out_proj.weight": (width, width), p + "attn.out_proj.bias": (width,),
                   p + "ln_1.weight": (width,), p + "ln_1.bias": (width,),
                   p + "ln_2.weight": (width,), p + "ln_2.bias": (width,),
                   p + "mlp.c_fc.weight": (4 * width, width), p + "mlp.c_fc.bias": (4 * width,),
                   p + "mlp.c_proj.weight": (width, 4 * width), p + "mlp.c_proj.bias": (width,)}
    return shapes


def style_layout() -> dict[str, tuple[int, ...]]:
    return {"style_embedding": (1, 8, 1024), "ln_pre.weight": (1024,), "ln_pre.bias": (1024,),
            "ln_post.weight": (1024,), "ln_post.bias": (1024,), "proj": (1024, 768)} | transformer_layout(1024)


def fuser_layout() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {"task_embedding": (16, 768), "positional_embedding": (4, 768),
                                          "seq_proj": (768, 768), "ln_pre.weight": (768,), "ln_pre.bias": (768,),
                                          "ln_post.weight": (768,), "ln_post.bias": (768,)}
    for i, c in enumerate([320, 640, 1280, 1280]):
        shapes |= {f"spatial_feat_mapping.{i}.1.weight": (768, c), f"spatial_feat_mapping.{i}.1.bias": (768,),
                   f"spatial_ch_projs.{i}.weight": (c, 768), f"spatial_ch_projs.{i}.bias": (c,)}
    return shapes | transformer_layout(768)


# name: (layout, tensors, parameters, kind, family, condition channels) — counts from reference §1
RELEASED = {
    "t2iadapter_canny_sd15v2": (full_layout(64), 38, 77_000_640, "full", "sd1", 1),
    "t2iadapter_depth_sd14v1": (full_layout(192), 38, 77_369_280, "full", "sd1", 3),
    "t2iadapter_color_sd14v1": (light_layout(), 80, 18_689_200, "light", "sd1", 3),
    "t2iadapter_style_sd14v1": (style_layout(), 42, 38_587_392, "style", "sd1", 3),
    "coadapter-fuser-sd15v1": (fuser_layout(), 59, 27_285_184, "coadapter_fuser", "sd1", 0),
    "adapter-xl-sketch": (full_layout(256), 38, 77_553_600, "sdxl", "sdxl", 1),
    "adapter-xl-openpose": (full_layout(768), 38, 79_028_160, "sdxl", "sdxl", 3),
}


def distinct_state_dict(layout: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Every tensor filled with its own value (fast at full size), so a swapped or dropped key shows up."""
    return {k: torch.full(s, float(i + 1)) for i, (k, s) in enumerate(layout.items())}


@pytest.mark.parametrize("name", list(RELEASED))
def test_released_layout_loads_strictly(name: str) -> None:
    layout, tensors, params, kind, family, channels = RELEASED[name]
    assert len(layout) == tensors and sum(torch.Size(s).numel() for s in layout.values()) == params
    state_dict = distinct_state_dict(layout)
    spec, module = module_from_state_dict(state_dict, name)
    assert (spec.kind, spec.family, spec.cond_channels) == (kind, family, channels)
    loaded = module.state_dict()
    assert {k: tuple(v.shape) for k, v in loaded.items()} == layout
    assert all(torch.equal(loaded[k], v) for k, v in state_dict.items())
    assert not any(p.requires_grad for p in module.parameters()) and not module.training


# ------------------------------------------------------------------------- feature shapes vs the UNet's blocks


def unet_block_shapes(config, sizes: list[tuple[int, int]]) -> dict[tuple[int, int], dict[str | int, tuple]]:
    """Output shape of every input block and the middle block of a full-size UNet per image size, on meta."""
    with torch.device("meta"):
        unet = UNetModel(config)
    shapes: dict[str | int, tuple[int, ...]] = {}
    for i, block in enumerate(unet.input_blocks):
        block.register_forward_hook(lambda _m, _a, out, i=i: shapes.__setitem__(i, tuple(out.shape)))
    unet.middle_block.register_forward_hook(lambda _m, _a, out: shapes.__setitem__("middle", tuple(out.shape)))
    y = torch.empty(1, config.adm_in_channels, device="meta") if config.adm_in_channels else None
    result = {}
    for height, width in sizes:
        unet(torch.empty(1, 4, height // 8, width // 8, device="meta"), torch.ones(1, device="meta"),
             torch.empty(1, 77, config.context_dim, device="meta"), y)
        result[(height, width)] = dict(shapes)
    return result


@pytest.fixture(scope="module")
def unet_shapes() -> dict[tuple[str, tuple[int, int]], dict]:
    sizes = [(512, 512), (520, 776)]
    return {(family, size): shapes for family, config in (("sd1", SD15_UNET), ("sdxl", SDXL_UNET))
            for size, shapes in unet_block_shapes(config, sizes).items()}


@pytest.mark.parametrize("name", ["t2iadapter_canny_sd15v2", "t2iadapter_depth_sd14v1", "t2iadapter_color_sd14v1",
                                  "adapter-xl-sketch", "adapter-xl-openpose"])
@pytest.mark.parametrize("size", [(512, 512), (520, 776)], ids=["512x512", "520x776"])
def test_feature_shapes_match_unet_input_blocks(name: str, size: tuple[int, int], unet_shapes, tmp_path) -> None:
    """Features land exactly on the UNet's block shapes, also at 520x776 (not a multiple of 64; SDXL pads to 16)."""
    from t2i_adapter import AdapterFeatures, LoadedAdapter, compute_features, unet_hooks_for

    layout, *_, family, channels = RELEASED[name]
    meta_state = {k: torch.empty(s, device="meta") for k, s in layout.items()}
    spec, module = module_from_state_dict(meta_state, name, device="meta")
    adapter = LoadedAdapter(name, tmp_path / name, spec.kind, spec.family, spec.cond_channels, None, module,
                            spec.config)
    assert adapter.family == family and adapter.cond_channels == channels
    features = compute_features(adapter, torch.empty(1, 3, *size, device="meta"))
    hooks = unet_hooks_for([(features, 1.0)], family)
    expected = unet_shapes[(family, size)]
    placed = {**hooks.input_block_additions, **({"middle": hooks.middle_block_addition} if family == "sdxl" else {})}
    assert list(placed) == ([2, 5, 8, 11] if family == "sd1" else [3, 5, 8, "middle"])
    for where, feature in placed.items():
        assert tuple(feature.shape) == expected[where], where
    assert isinstance(features, AdapterFeatures) and features.style_tokens is None


def test_style_and_fuser_shapes_on_meta() -> None:
    from t2i_adapter.coadapter_fuser import TASK_INDEX

    _, style = module_from_state_dict({k: torch.empty(s) for k, s in style_layout().items()}, "style")
    tokens = style.to("meta")(torch.empty(2, 257, 1024, device="meta"))
    assert tuple(tokens.shape) == (2, 8, 768)
    _, fuser = module_from_state_dict({k: torch.empty(s) for k, s in fuser_layout().items()}, "fuser")
    maps = [torch.empty(2, c, 64 // 2**i, 64 // 2**i, device="meta") for i, c in enumerate([320, 640, 1280, 1280])]
    fused, seq = fuser.to("meta")([(TASK_INDEX["depth"], maps), (TASK_INDEX["style"], tokens)])
    assert [tuple(f.shape) for f in fused] == [tuple(m.shape) for m in maps] and tuple(seq.shape) == (2, 8, 768)


# --------------------------------------------------------------------------------- file formats and detection

TINY = FullAdapterConfig(channels=(8, 16, 32, 32), cond_channels=1)


def tiny_adapter_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in Adapter(TINY).state_dict().items()}


@pytest.mark.parametrize("layout", ["plain.pth", "module.pt", "wrapped.pth", "lightning.pth", "plain.safetensors"])
def test_checkpoint_layouts_load_the_same_weights(layout: str, tmp_path: Path) -> None:
    state = tiny_adapter_state()
    stem, suffix = layout.split(".")
    path = tmp_path / f"my_sketch_{stem}.{suffix}"
    if suffix == "safetensors":
        save_file(state, str(path))
    else:
        content = {
            "plain": state,
            "module": {f"module.{k}": v for k, v in state.items()},
            "wrapped": {"state_dict": state, "iter": 7},
            "lightning": {"state_dict": {f"adapter.{k}": v for k, v in state.items()}},
        }[stem]
        torch.save(content, path)
    adapter = load_adapter(path, dtype=torch.float64)
    assert (adapter.kind, adapter.family, adapter.cond_channels, adapter.condition) == ("full", "sd1", 1, "sketch")
    assert adapter.config == TINY and adapter.name == path.stem and adapter.path == path
    loaded = adapter.module.state_dict()
    assert all(loaded[k].dtype == torch.float64 and torch.equal(loaded[k], v.double()) for k, v in state.items())


def test_custom_layouts_are_detected_from_shapes() -> None:
    """Adapters trained here for other UNets (demo model: 3 levels, unshuffle 4) and non-default options."""
    for config in (FullAdapterConfig(channels=(64, 128, 128), cond_channels=1, unshuffle=4),
                   FullAdapterConfig(channels=(8, 16), cond_channels=3, unshuffle=2),
                   FullAdapterConfig(channels=(8, 16, 16), nums_rb=3, ksize=3, sk=False, use_conv=True)):
        state = Adapter(config).state_dict()
        spec, _ = module_from_state_dict(state, "custom")
        assert spec.config.channels == config.channels and spec.config.unshuffle == config.unshuffle
        assert spec.config.level_downsamples == config.level_downsamples
        assert (spec.config.ksize, spec.config.sk, spec.config.use_conv) == (config.ksize, config.sk, config.use_conv)


def test_unknown_files_raise_a_clear_error(tmp_path: Path) -> None:
    cases = {
        "controlnet.pth": {"control_model.input_hint_block.0.weight": torch.zeros(16, 3, 3, 3)},
        "sd_model.safetensors": {"model.diffusion_model.out.2.weight": torch.zeros(4, 320, 3, 3)},
        "random.pth": {"encoder.weight": torch.zeros(3, 4), "decoder.bias": torch.zeros(2)},
        "empty.pth": {},
    }
    expected = {"controlnet.pth": "ControlNet", "sd_model.safetensors": "Stable Diffusion checkpoint",
                "random.pth": "not a known T2I-Adapter layout", "empty.pth": "no tensors"}
    for name, content in cases.items():
        path = tmp_path / name
        save_file(content, str(path)) if name.endswith(".safetensors") else torch.save(content, path)
        with pytest.raises(AdapterFormatError, match=expected[name]) as info:
            load_adapter(path)
        assert name in str(info.value)
    broken = tiny_adapter_state()
    broken["body.2.in_conv.weight"] = torch.zeros(16, 9, 1, 1)  # 8 -> 16 channels, wrong input width
    torch.save(broken, tmp_path / "bad_shape.pth")
    with pytest.raises(AdapterFormatError, match=r"bad_shape.pth does not match.*body.2.in_conv.weight"):
        load_adapter(tmp_path / "bad_shape.pth")
    truncated = tmp_path / "truncated.pth"
    torch.save(tiny_adapter_state(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(AdapterFormatError, match="truncated.pth"):
        load_adapter(truncated)
    with pytest.raises(AdapterFormatError, match="missing.pth does not exist"):
        load_adapter(tmp_path / "missing.pth")
    (tmp_path / "not_diffusers").mkdir()
    with pytest.raises(AdapterFormatError, match="not a diffusers adapter"):
        load_adapter(tmp_path / "not_diffusers")
    assert AdapterFormatError("x").status_code == 400 and isinstance(AdapterFormatError("x"), ValueError)


def test_list_adapter_files(tmp_path: Path) -> None:
    for name in ("b_depth.pth", "A_canny.safetensors", "sub/c_style.pt", "notes.txt", "sub/.hidden.pth"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    diffusers = tmp_path / "sub" / "t2iadapter_sketch_sd15v2"
    diffusers.mkdir()
    (diffusers / "config.json").write_text("{}")
    (diffusers / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in list_adapter_files(tmp_path)]
    assert found == ["A_canny.safetensors", "b_depth.pth", "sub/c_style.pt", "sub/t2iadapter_sketch_sd15v2"]
    assert list_adapter_files(tmp_path / "absent") == []


@pytest.mark.parametrize(("name", "condition"), [
    ("t2iadapter_canny_sd15v2", "canny"), ("t2iadapter_openpose_sd14v1", "openpose"),
    ("t2iadapter_keypose_sd14v1", "keypose"), ("t2iadapter_zoedepth_sd15v1", "zoedepth"),
    ("t2i-adapter-depth-zoe-sdxl-1.0", "zoedepth"), ("t2i-adapter-depth-midas-sdxl-1.0", "depth"),
    ("coadapter-color-sd15v1", "color"), ("t2iadapter_seg_sd14v1", "seg"), ("adapter-xl-sketch", "sketch"),
    ("t2i-adapter-lineart-sdxl-1.0", "lineart"), ("coadapter-fuser-sd15v1", None), ("my_adapter", None),
])
def test_guess_condition(name: str, condition: str | None) -> None:
    assert guess_condition(name) == condition
