"""Tests for modules/sd/text_encoders.py: equivalence with transformers, open_clip and diffusers' conversion.

Equivalence tests run tiny random models in fp32 and require max |ours - reference| <= 1e-4 * max |reference|.
"""

from __future__ import annotations

import pytest
import torch
import transformers
from torch import Tensor

from modules.sd.text_encoders import (
    SD1_CLIP_L,
    SD2_OPENCLIP_H,
    SDXL_CLIP_L,
    SDXL_OPENCLIP_BIGG,
    CLIPTextConfig,
    CLIPTextEncoder,
    OpenCLIPTextConfig,
    OpenCLIPTextEncoder,
    fix_clip_state_dict,
    fix_open_clip_state_dict,
)

VOCAB = 1000
END_OF_TEXT = VOCAB - 1  # like CLIP's 49407: the highest id, so argmax finds it
START_OF_TEXT = VOCAB - 2
LENGTH = 16
TINY_CLIP = CLIPTextConfig(
    vocab_size=VOCAB, hidden_size=64, num_layers=3, num_heads=4, intermediate_size=256, max_positions=LENGTH
)
TINY_OPEN_CLIP = OpenCLIPTextConfig(
    vocab_size=VOCAB, width=64, layers=3, heads=4, context_length=LENGTH, projection_dim=48
)


def assert_close_to_reference(ours: Tensor, reference: Tensor) -> None:
    scale = reference.abs().max().item()
    error = (ours - reference).abs().max().item()
    assert ours.shape == reference.shape
    assert error <= 1e-4 * scale, f"max abs error {error:.3g} > 1e-4 * {scale:.3g}"


def prompt_tokens(pad_id: int) -> Tensor:
    """Two prompts of different lengths, [SOT, words..., EOT, pad...], as the tokenizer builds them."""
    generator = torch.Generator().manual_seed(1)
    tokens = torch.full((2, LENGTH), pad_id, dtype=torch.long)
    for row, words in enumerate((5, 11)):
        tokens[row, 0] = START_OF_TEXT
        tokens[row, 1 : words + 1] = torch.randint(1, VOCAB - 2, (words,), generator=generator)
        tokens[row, words + 1] = END_OF_TEXT
    return tokens


# --- CLIP (transformers layout) -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_pair() -> tuple[CLIPTextEncoder, transformers.CLIPTextModel]:
    torch.manual_seed(0)
    reference_config = transformers.CLIPTextConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=LENGTH,
        hidden_act="quick_gelu",
        bos_token_id=START_OF_TEXT,
        eos_token_id=END_OF_TEXT,  # pools at the first EOT id; on SD1 token rows that is the argmax too
        attn_implementation="eager",
    )
    reference = transformers.CLIPTextModel(reference_config).eval()
    for parameter in reference.parameters():  # default LayerNorm init is 1/0: perturb so the norms matter
        parameter.data.add_(0.05 * torch.randn_like(parameter))
    ours = CLIPTextEncoder(TINY_CLIP).eval()
    ours.load_state_dict(checkpoint_keys(reference.state_dict()), strict=True)
    return ours, reference


def checkpoint_keys(transformers_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """transformers >= 5 dropped the ``text_model.`` level inside CLIPTextModel; checkpoints keep it."""
    return {
        "transformer." + (key if key.startswith("text_model.") else "text_model." + key): value
        for key, value in transformers_state.items()
        if not key.endswith("position_ids")
    }


@torch.no_grad()
def test_clip_matches_transformers_hidden_states_and_pooled(clip_pair):
    """Reference: transformers CLIPTextModel (eager attention), same weights, SD1-style EOT padding; tol 1e-4."""
    ours, reference = clip_pair
    tokens = prompt_tokens(pad_id=END_OF_TEXT)
    out = reference(tokens, output_hidden_states=True)
    final_norm = getattr(reference, "text_model", reference).final_layer_norm

    last = ours(tokens)
    assert_close_to_reference(last.hidden, out.last_hidden_state)
    assert_close_to_reference(last.pooled, out.pooler_output)
    assert_close_to_reference(ours(tokens, apply_final_norm=False).hidden, out.hidden_states[-1])
    # SDXL CLIP-L: penultimate without norm; SD1 clip skip 2: penultimate with norm.
    penultimate = ours(tokens, skip_last_layers=1, apply_final_norm=False)
    assert_close_to_reference(penultimate.hidden, out.hidden_states[-2])
    assert_close_to_reference(penultimate.pooled, out.pooler_output)
    clip_skip_3 = ours(tokens, skip_last_layers=2, apply_final_norm=True)
    assert_close_to_reference(clip_skip_3.hidden, final_norm(out.hidden_states[-3]))


@torch.no_grad()
def test_clip_need_pooled_false_gives_same_hidden_without_pooled(clip_pair):
    ours, _ = clip_pair
    tokens = prompt_tokens(pad_id=END_OF_TEXT)
    full = ours(tokens, skip_last_layers=1)
    fast = ours(tokens, skip_last_layers=1, need_pooled=False)
    assert fast.pooled is None
    torch.testing.assert_close(fast.hidden, full.hidden, rtol=0, atol=0)


@torch.no_grad()
def test_input_embeds_replace_the_token_lookup(clip_pair):
    """Textual inversion path: unchanged embeds reproduce the token path; an edited row changes later positions."""
    ours, _ = clip_pair
    tokens = prompt_tokens(pad_id=END_OF_TEXT)
    embeds = ours.embed_tokens(tokens)
    torch.testing.assert_close(ours(tokens, input_embeds=embeds).hidden, ours(tokens).hidden, rtol=0, atol=0)
    embeds[:, 2] = torch.randn(embeds.shape[0], embeds.shape[2], generator=torch.Generator().manual_seed(2))
    edited = ours(tokens, input_embeds=embeds).hidden
    plain = ours(tokens).hidden
    torch.testing.assert_close(edited[:, :2], plain[:, :2])  # causal: earlier positions unaffected
    assert (edited[:, 2:] - plain[:, 2:]).abs().max() > 1e-2


def test_fix_clip_state_dict_renames_legacy_keys_and_drops_position_ids():
    weight = torch.zeros(3)
    legacy = {
        "transformer.embeddings.token_embedding.weight": weight,
        "transformer.embeddings.position_ids": torch.arange(77)[None],
        "transformer.encoder.layers.0.mlp.fc1.bias": weight,
        "transformer.final_layer_norm.weight": weight,
        "transformer.text_model.embeddings.position_ids": torch.arange(77)[None],
    }
    assert fix_clip_state_dict(legacy) == {
        "transformer.text_model.embeddings.token_embedding.weight": weight,
        "transformer.text_model.encoder.layers.0.mlp.fc1.bias": weight,
        "transformer.text_model.final_layer_norm.weight": weight,
    }


def test_clip_rejects_bad_skip_and_overlong_tokens(clip_pair):
    ours, _ = clip_pair
    with pytest.raises(ValueError, match="skip_last_layers"):
        ours(prompt_tokens(END_OF_TEXT), skip_last_layers=TINY_CLIP.num_layers)
    with pytest.raises(ValueError, match="exceed"):
        ours(torch.zeros(1, LENGTH + 1, dtype=torch.long))


# --- OpenCLIP layout ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def open_clip_pair():
    import open_clip.transformer

    torch.manual_seed(0)
    reference = open_clip.transformer.TextTransformer(
        context_length=LENGTH,
        vocab_size=VOCAB,
        width=64,
        heads=4,
        layers=3,
        output_dim=48,
        output_tokens=True,
    ).eval()
    for parameter in reference.parameters():
        parameter.data.add_(0.05 * torch.randn_like(parameter))
    ours = OpenCLIPTextEncoder(TINY_OPEN_CLIP).eval()
    state = {"model." + key: value for key, value in reference.state_dict().items()}
    state["model.logit_scale"] = torch.tensor(4.6)
    state["model.visual.proj"] = torch.zeros(2, 2)
    ours.load_state_dict(fix_open_clip_state_dict(state), strict=True)
    return ours, reference


@torch.no_grad()
def test_open_clip_matches_open_clip_text_tower(open_clip_pair):
    """Reference: open_clip TextTransformer (nn.MultiheadAttention, causal mask), zero padding; tol 1e-4."""
    ours, reference = open_clip_pair
    tokens = prompt_tokens(pad_id=0)
    captured: list[Tensor] = []
    hook = reference.transformer.resblocks[-2].register_forward_hook(lambda module, args, out: captured.append(out))
    try:
        pooled, last_normed = reference(tokens)
    finally:
        hook.remove()
    penultimate = captured[0]

    last = ours(tokens)
    assert_close_to_reference(last.hidden, last_normed)
    assert_close_to_reference(last.pooled, pooled)
    sdxl = ours(tokens, skip_last_layers=1, apply_final_norm=False)
    assert_close_to_reference(sdxl.hidden, penultimate)
    assert_close_to_reference(sdxl.pooled, pooled)
    sd2 = ours(tokens, skip_last_layers=1, apply_final_norm=True)
    assert_close_to_reference(sd2.hidden, reference.ln_final(penultimate))


@torch.no_grad()
def test_open_clip_matches_diffusers_conversion_for_sdxl_and_sd2(open_clip_pair):
    """Reference: diffusers convert_open_clip_checkpoint -> transformers CLIPTextModelWithProjection; tol 1e-4.

    SDXL bigG: diffusers uses hidden_states[-2] (no norm) and text_embeds. SD2: diffusers' text encoder has one
    layer fewer (the conversion drops the last block) and uses last_hidden_state, i.e. penultimate + final norm.
    """
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint

    ours, _ = open_clip_pair
    tokens = prompt_tokens(pad_id=0)
    checkpoint = {"conditioner.embedders.1." + key: value for key, value in ours.state_dict().items()}

    def diffusers_model(layers: int) -> transformers.CLIPTextModelWithProjection:
        config = transformers.CLIPTextConfig(
            vocab_size=VOCAB,
            hidden_size=64,
            intermediate_size=256,
            num_hidden_layers=layers,
            num_attention_heads=4,
            max_position_embeddings=LENGTH,
            hidden_act="gelu",
            projection_dim=48,
            eos_token_id=2,  # 2 = argmax rule
            attn_implementation="eager",
        )
        model = transformers.CLIPTextModelWithProjection(config).eval()
        converted = convert_open_clip_checkpoint(model, checkpoint, prefix="conditioner.embedders.1.model.")
        missing, unexpected = model.load_state_dict(converted, strict=False)
        assert not [key for key in missing if not key.endswith("position_ids")]
        assert all(key.startswith(f"text_model.encoder.layers.{layers}.") for key in unexpected)
        return model

    sdxl = diffusers_model(TINY_OPEN_CLIP.layers)(tokens, output_hidden_states=True)
    ours_sdxl = ours(tokens, skip_last_layers=1, apply_final_norm=False)
    assert_close_to_reference(ours_sdxl.hidden, sdxl.hidden_states[-2])
    assert_close_to_reference(ours_sdxl.pooled, sdxl.text_embeds)

    sd2 = diffusers_model(TINY_OPEN_CLIP.layers - 1)(tokens)
    assert_close_to_reference(ours(tokens, skip_last_layers=1, apply_final_norm=True).hidden, sd2.last_hidden_state)


@torch.no_grad()
def test_open_clip_pooled_comes_from_end_of_text_with_zero_padding(open_clip_pair):
    """With zero padding the EOT is the argmax, not the last position; padding after it cannot change the result."""
    ours, _ = open_clip_pair
    tokens = prompt_tokens(pad_id=0)
    encoding = ours(tokens)
    last_layer = ours(tokens, apply_final_norm=False).hidden
    end_of_text = (tokens == END_OF_TEXT).int().argmax(dim=1)
    assert end_of_text.tolist() == [6, 12]
    expected = ours.model.ln_final(last_layer[torch.arange(2), end_of_text]) @ ours.model.text_projection
    assert_close_to_reference(encoding.pooled, expected)
    at_last_position = ours.model.ln_final(last_layer[:, -1]) @ ours.model.text_projection
    assert (encoding.pooled - at_last_position).abs().max() > 1e-2

    other_padding = tokens.clone()
    other_padding[0, 7:] = torch.arange(7, LENGTH) + 10  # ids below the EOT id, so argmax is unchanged
    torch.testing.assert_close(ours(other_padding).pooled[0], encoding.pooled[0])


def test_fix_open_clip_state_dict_drops_extras():
    weight = torch.zeros(2)
    state = {
        "model.logit_scale": weight,
        "model.attn_mask": weight,
        "model.visual.conv1.weight": weight,
        "model.ln_final.weight": weight,
        "model.text_projection": weight,
    }
    assert fix_open_clip_state_dict(state) == {"model.ln_final.weight": weight, "model.text_projection": weight}


# --- full-size layouts on the meta device -------------------------------------------------------------------------


def shapes(module: torch.nn.Module, prefix: str = "") -> dict[str, tuple[int, ...]]:
    return {prefix + key: tuple(value.shape) for key, value in module.state_dict().items()}


def test_sd1_clip_l_layout_matches_transformers_on_meta():
    """Full-size SD1 CLIP-L: 196 tensors named and shaped like transformers' CLIPTextModel (position_ids aside)."""
    with torch.device("meta"):
        ours = CLIPTextEncoder(SD1_CLIP_L)
        reference = transformers.CLIPTextModel(
            transformers.CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12)
        )
    ours_shapes = shapes(ours)
    assert len(ours_shapes) == 196
    assert ours_shapes == {key: tuple(value.shape) for key, value in checkpoint_keys(reference.state_dict()).items()}
    assert ours_shapes["transformer.text_model.embeddings.token_embedding.weight"] == (49408, 768)
    assert ours_shapes["transformer.text_model.encoder.layers.11.self_attn.q_proj.weight"] == (768, 768)
    assert ours_shapes["transformer.text_model.encoder.layers.0.mlp.fc1.weight"] == (3072, 768)
    assert ours_shapes["transformer.text_model.final_layer_norm.weight"] == (768,)
    assert SDXL_CLIP_L == SD1_CLIP_L


@pytest.mark.parametrize(
    ("config", "blocks", "width", "projection"),
    [(SD2_OPENCLIP_H, 24, 1024, 1024), (SDXL_OPENCLIP_BIGG, 32, 1280, 1280)],
)
def test_open_clip_layouts_match_open_clip_on_meta(config, blocks, width, projection):
    """Full-size SD2 ViT-H and SDXL bigG towers: same names and shapes as open_clip's TextTransformer."""
    import open_clip.transformer

    with torch.device("meta"):
        ours = OpenCLIPTextEncoder(config)
        reference = open_clip.transformer.TextTransformer(
            width=config.width, heads=config.heads, layers=config.layers, output_dim=config.projection_dim
        )
    ours_shapes = shapes(ours)
    assert ours_shapes == shapes(reference, "model.")
    assert len(ours_shapes) == 12 * blocks + 5
    assert ours_shapes["model.transformer.resblocks.0.attn.in_proj_weight"] == (3 * width, width)
    assert ours_shapes[f"model.transformer.resblocks.{blocks - 1}.mlp.c_fc.weight"] == (4 * width, width)
    assert ours_shapes["model.positional_embedding"] == (77, width)
    assert ours_shapes["model.text_projection"] == (width, projection)


def test_open_clip_without_projection_has_no_projection_key():
    config = OpenCLIPTextConfig(vocab_size=VOCAB, width=32, layers=1, heads=2, context_length=8, projection_dim=None)
    torch.manual_seed(0)
    ours = OpenCLIPTextEncoder(config)
    assert "model.text_projection" not in ours.state_dict()
    assert ours(torch.tensor([[START_OF_TEXT, 5, END_OF_TEXT, 0]])).pooled.shape == (1, 32)
