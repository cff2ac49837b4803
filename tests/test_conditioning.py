"""Tests for modules/conditioning.py and modules/conditioning_chunks.py.

The SD1 equivalence test compares against a hand-built reference: chunks written out token by token, each run through
transformers' `CLIPTextModel` (eager attention, same random weights), weighted and mean-restored by hand; tolerance
max |ours - reference| <= 1e-4 * max |reference| in fp32.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import transformers
from torch import Tensor

from modules import prompt_parser
from modules.conditioning import ConditioningOptions, TextConditioner, apply_emphasis, emphasis_infotext
from modules.conditioning_chunks import (
    PLACEHOLDER_ID,
    count_tokens,
    pad_after_first_end,
    target_token_count,
    tokenize_prompt,
)
from modules.sd.text_encoders import CLIPTextConfig, CLIPTextEncoder, OpenCLIPTextEncoder
from modules.sd.tokenizer import get_clip_tokenizer
from modules.sd.unet import sdxl_adm_vector
from tests.sd.factory import TINY_CLIP, TINY_OPEN_CLIP, TINY_UNETS

BOS, EOS = 49406, 49407
WIDTH = 64
LAYERS = 3
# 70 cats then a comma: the chunk fills 3 tokens after the comma, so those move on; BREAK closes chunk 2.
REFERENCE_PROMPT = "(red:1.5) " + " ".join(["cat"] * 70) + ", " + " ".join(["dog"] * 10) + " BREAK [blue] sky"


@pytest.fixture(scope="module")
def tok():
    return get_clip_tokenizer()


@pytest.fixture(scope="module")
def ids(tok) -> dict[str, int]:
    words = {word: tok.encode(word) for word in ("red", "cat", "dog", "blue", "sky", ",", "a", "b")}
    assert all(len(v) == 1 for v in words.values())
    return {word: v[0] for word, v in words.items()}


def assert_close_to_reference(ours: Tensor, reference: Tensor) -> None:
    scale = reference.abs().max().item()
    error = (ours - reference).abs().max().item()
    assert ours.shape == reference.shape
    assert error <= 1e-4 * scale, f"max abs error {error:.3g} > 1e-4 * {scale:.3g}"


def reference_chunks(ids: dict[str, int]) -> tuple[list[list[int]], list[list[float]]]:
    """REFERENCE_PROMPT's three chunks, written out by hand."""
    body1 = [ids["red"], *[ids["cat"]] * 70, ids[","]]
    body2 = [ids["dog"]] * 10
    body3 = [ids["blue"], ids["sky"]]
    tokens = [[BOS, *body, *[EOS] * (75 - len(body)), EOS] for body in (body1, body2, body3)]
    multipliers = [[1.0] * 77 for _ in range(3)]
    multipliers[0][1] = 1.5
    multipliers[2][1] = 1 / 1.1
    return tokens, multipliers


# --- chunking ------------------------------------------------------------------------------------------------------


def test_chunks_break_comma_backtrack_and_weights(tok, ids):
    chunks, token_count = tokenize_prompt(REFERENCE_PROMPT, tok)
    tokens, multipliers = reference_chunks(ids)
    assert [c.tokens for c in chunks] == tokens
    for chunk, expected in zip(chunks, multipliers, strict=True):
        assert chunk.multipliers == pytest.approx(expected)
    assert token_count == 75 + 75 + 2
    assert count_tokens(REFERENCE_PROMPT) == (152, 225)


def test_comma_backtrack_limits(tok, ids):
    text = " ".join(["cat"] * 70) + ", " + " ".join(["dog"] * 10)
    no_backtrack, _ = tokenize_prompt(text, tok, comma_padding_backtrack=0)
    assert no_backtrack[0].tokens[1:76] == [ids["cat"]] * 70 + [ids[","]] + [ids["dog"]] * 4
    short_reach, _ = tokenize_prompt(text, tok, comma_padding_backtrack=4)  # the comma is 5 tokens back
    assert short_reach[0].tokens == no_backtrack[0].tokens
    moved, _ = tokenize_prompt(text, tok, comma_padding_backtrack=5)
    assert moved[0].tokens[72:] == [EOS] * 5 and moved[1].tokens[1:11] == [ids["dog"]] * 10


def test_empty_prompt_is_one_chunk_and_exact_75_is_one_chunk(tok, ids):
    chunks, count = tokenize_prompt("", tok)
    assert len(chunks) == 1 and chunks[0].tokens == [BOS] + [EOS] * 76 and count == 0
    chunks, count = tokenize_prompt(" ".join(["cat"] * 75), tok)
    assert len(chunks) == 1 and count == 75
    chunks, count = tokenize_prompt(" ".join(["cat"] * 76), tok)
    assert len(chunks) == 2 and count == 76 and chunks[1].tokens[:3] == [BOS, ids["cat"], EOS]


def test_emphasis_none_keeps_brackets_and_break_literal(tok, ids):
    chunks, _ = tokenize_prompt("(cat:1.5) BREAK dog", tok, emphasis="None")
    assert len(chunks) == 1
    assert chunks[0].tokens[1:10] == tok.encode("(cat:1.5) BREAK dog") + [EOS] * (9 - len(tok.encode("(cat:1.5) "
                                                                                                 "BREAK dog")))
    assert set(chunks[0].multipliers) == {1.0}
    ignored, _ = tokenize_prompt("(cat:1.5) BREAK dog", tok, emphasis="Ignore")
    assert len(ignored) == 2 and ignored[0].multipliers[1] == 1.5  # parsed; weights are dropped at encode time


def test_open_clip_pads_with_zero_after_first_end():
    tokens = [BOS, 5, EOS, EOS, EOS]
    assert pad_after_first_end(tokens, EOS, 0) == [BOS, 5, EOS, 0, 0]
    assert pad_after_first_end(tokens, EOS, EOS) == tokens
    assert target_token_count(0) == 75 and target_token_count(75) == 75 and target_token_count(76) == 150


class FakeLookup:
    """Textual-inversion lookup stand-in: `trigger` token ids map to an embedding."""

    def __init__(self, trigger: list[int], embedding) -> None:
        self.trigger, self.embedding = trigger, embedding

    def find_at(self, token_ids, offset):
        if list(token_ids[offset : offset + len(self.trigger)]) == self.trigger:
            return self.embedding, len(self.trigger)
        return None


def test_embedding_becomes_placeholders_and_never_straddles_chunks(tok, ids):
    embedding = SimpleNamespace(name="emb", vectors=torch.zeros(3, 8))
    lookup = FakeLookup([ids["red"], ids["sky"]], embedding)
    chunks, count = tokenize_prompt("a (red sky:1.2) b", tok, embedding_lookup=lookup)
    assert chunks[0].tokens[:7] == [BOS, ids["a"], *[PLACEHOLDER_ID] * 3, ids["b"], EOS]
    assert chunks[0].multipliers[2:5] == [1.2] * 3 and count == 5
    assert [(f.offset, f.embedding.name) for f in chunks[0].fixes] == [(1, "emb")]
    # 73 tokens then a 3-vector embedding: it does not fit, so chunk 1 closes with 73 tokens.
    chunks, count = tokenize_prompt(" ".join(["cat"] * 73) + " red sky", tok, embedding_lookup=lookup)
    assert chunks[0].tokens[74:] == [EOS] * 3 and not chunks[0].fixes
    assert chunks[1].tokens[1:5] == [PLACEHOLDER_ID] * 3 + [EOS] and chunks[1].fixes[0].offset == 0
    assert count == 78


def test_comma_backtrack_moves_embedding_fixes_with_their_tokens(tok, ids):
    lookup = FakeLookup([ids["red"]], SimpleNamespace(name="emb", vectors=torch.zeros(2, 8)))
    chunks, _ = tokenize_prompt(" ".join(["cat"] * 70) + ", red dog dog dog", tok, embedding_lookup=lookup)
    assert not chunks[0].fixes and chunks[1].fixes[0].offset == 0
    assert chunks[1].tokens[1:6] == [PLACEHOLDER_ID, PLACEHOLDER_ID, ids["dog"], ids["dog"], ids["dog"]]


def test_token_counter_strips_networks_and_takes_longest_variant():
    assert count_tokens("a cat <lora:thing:0.8>") == (2, 75)
    assert count_tokens("a cat BREAK dog") == (76, 150)
    long_variant = " ".join(["cat"] * 80)
    assert count_tokens(f"[a:{long_variant}:5]", steps=10) == (80, 150)
    assert count_tokens(f"dog AND {long_variant}") == (80, 150)
    assert count_tokens("(cat:1.5)", emphasis="None")[0] == len(get_clip_tokenizer().encode("(cat:1.5)"))


# --- SD1 against transformers ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sd1():
    """Our CLIPTextEncoder and transformers' CLIPTextModel with the same tiny random weights (real vocabulary)."""
    torch.manual_seed(0)
    config = transformers.CLIPTextConfig(
        vocab_size=49408, hidden_size=WIDTH, intermediate_size=128, num_hidden_layers=LAYERS, num_attention_heads=2,
        max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=BOS, eos_token_id=EOS,
        attn_implementation="eager",
    )
    reference = transformers.CLIPTextModel(config).eval()
    for parameter in reference.parameters():
        parameter.data.add_(0.05 * torch.randn_like(parameter))
    ours = CLIPTextEncoder(CLIPTextConfig(hidden_size=WIDTH, num_layers=LAYERS, num_heads=2, intermediate_size=128))
    state = {
        "transformer." + (k if k.startswith("text_model.") else "text_model." + k): v
        for k, v in reference.state_dict().items()
        if not k.endswith("position_ids")
    }
    ours.load_state_dict(state, strict=True)
    model = SimpleNamespace(family="sd1", text_encoders={"clip_l": ours.eval()})
    return model, reference


@torch.no_grad()
def hand_reference(reference, tokens: list[list[int]], multipliers: list[list[float]], clip_skip: int = 1,
                   normalize: bool = True) -> Tensor:
    parts = []
    for chunk_tokens, chunk_weights in zip(tokens, multipliers, strict=True):
        out = reference(torch.tensor([chunk_tokens]), output_hidden_states=True)
        z = out.last_hidden_state if clip_skip == 1 else reference.final_layer_norm(out.hidden_states[-clip_skip])
        weighted = z * torch.tensor(chunk_weights)[None, :, None]
        if normalize:
            weighted = weighted * (z.mean() / weighted.mean())
        parts.append(weighted)
    return torch.cat(parts, dim=1)


@pytest.mark.parametrize("clip_skip", [1, 2])
def test_sd1_matches_hand_built_transformers_reference(sd1, ids, clip_skip):
    model, reference = sd1
    conditioner = TextConditioner(model, ConditioningOptions(clip_skip=clip_skip))
    cond = conditioner.get_learned_conditioning([REFERENCE_PROMPT])
    assert cond.shape == (1, 3 * 77, WIDTH)
    assert_close_to_reference(cond, hand_reference(reference, *reference_chunks(ids), clip_skip=clip_skip))


def test_emphasis_modes(sd1, ids):
    model, reference = sd1
    tokens, multipliers = reference_chunks(ids)

    def cond(emphasis: str, text: str = REFERENCE_PROMPT) -> Tensor:
        return TextConditioner(model, ConditioningOptions(emphasis=emphasis)).get_learned_conditioning([text])

    assert_close_to_reference(cond("No norm"), hand_reference(reference, tokens, multipliers, normalize=False))
    ones = [[1.0] * 77 for _ in tokens]
    assert_close_to_reference(cond("Ignore"), hand_reference(reference, tokens, ones))
    literal = cond("None", "(red:1.5) cat")
    assert literal.shape == (1, 77, WIDTH)
    assert (literal - cond("Original", "red cat")).abs().max() > 1e-3
    assert emphasis_infotext(["(a)"], "No norm") == "No norm" and emphasis_infotext(["(a)"], "Original") is None
    z = torch.randn(2, 77, 4)
    weights = torch.ones(2, 77)
    weights[0, 3] = 2.0
    original = apply_emphasis(z, weights, "Original")
    torch.testing.assert_close(original.mean(dim=(1, 2)), z.mean(dim=(1, 2)))
    torch.testing.assert_close(original[1], z[1])


def test_batch_pads_shorter_texts_with_empty_prompt_chunks(sd1):
    model, _ = sd1
    conditioner = TextConditioner(model)
    batch = conditioner.get_learned_conditioning(["a cat", " ".join(["cat"] * 80)])
    assert batch.shape == (2, 154, WIDTH)
    alone = conditioner.get_learned_conditioning(["a cat"])
    empty = conditioner.get_learned_conditioning([""])
    torch.testing.assert_close(batch[0, :77], alone[0])
    torch.testing.assert_close(batch[0, 77:], empty[0])


class CountingEncoder(torch.nn.Module):
    """Wraps an encoder and counts forward calls."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0
        self.num_layers = inner.num_layers

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        return self.inner.embed_tokens(tokens)

    def forward(self, tokens: Tensor, **kwargs):
        self.calls += 1
        return self.inner(tokens, **kwargs)


def test_cache_reuses_encodings_across_steps_batches_and_options(sd1):
    model, _ = sd1
    counting = CountingEncoder(model.text_encoders["clip_l"])
    conditioner = TextConditioner(SimpleNamespace(family="sd1", text_encoders={"clip_l": counting}))
    first = conditioner.get_learned_conditioning(["a cat", "a cat"])
    assert counting.calls == 1
    again = conditioner.get_learned_conditioning(["a cat"])
    assert counting.calls == 1
    torch.testing.assert_close(again[0], first[1])
    schedules = prompt_parser.get_learned_conditioning(conditioner, ["[a cat:a dog:5]", "a cat"], steps=10)
    assert counting.calls == 2  # only "a dog" was new, encoded once for both schedule entries
    assert [s.end_at_step for s in schedules[0]] == [5, 10]
    torch.testing.assert_close(schedules[1][0].cond, first[0])
    conditioner.options = ConditioningOptions(clip_skip=2)
    conditioner.get_learned_conditioning(["a cat"])
    assert counting.calls == 3
    conditioner.cache_salt = ("lora", 1)
    conditioner.get_learned_conditioning(["a cat"])
    assert counting.calls == 4


def test_textual_inversion_vectors_replace_token_rows(sd1, tok, ids):
    model, _ = sd1
    encoder = model.text_encoders["clip_l"]
    vectors = encoder.embed_tokens(torch.tensor([[ids["red"], ids["cat"]]]))[0].detach()
    embedding = SimpleNamespace(name="redcat", vectors=vectors)
    lookup = FakeLookup(tok.encode("sky"), embedding)
    conditioner = TextConditioner(model, embedding_lookup=lookup)
    with_embedding = conditioner.get_learned_conditioning(["a sky dog"])
    plain = TextConditioner(model).get_learned_conditioning(["a red cat dog"])
    assert_close_to_reference(with_embedding, plain)
    assert "redcat" in conditioner.used_embeddings
    wrong_width = SimpleNamespace(name="bad", vectors=torch.zeros(1, WIDTH + 1))
    with pytest.raises(ValueError, match="wide"):
        TextConditioner(model, embedding_lookup=FakeLookup([ids["sky"]], wrong_width)).get_learned_conditioning(
            ["sky"])


# --- SD2 / SDXL ------------------------------------------------------------------------------------------------------


def test_sd2_uses_penultimate_layer_with_norm_zero_padding_and_ignores_clip_skip(tok):
    torch.manual_seed(1)
    encoder = OpenCLIPTextEncoder(TINY_OPEN_CLIP).eval()
    model = SimpleNamespace(family="sd2", text_encoders={"open_clip_h": encoder})
    cond = TextConditioner(model, ConditioningOptions(clip_skip=2)).get_learned_conditioning(["a cat"])
    tokens = torch.tensor([tok.tokenize_padded("a cat", pad_with_eos=False)])
    with torch.no_grad():
        expected = encoder(tokens, skip_last_layers=1, apply_final_norm=True).hidden
    assert cond.shape == (1, 77, TINY_OPEN_CLIP.width)
    torch.testing.assert_close(cond, expected)


@pytest.fixture(scope="module")
def sdxl():
    """The text side of tests/sd/factory.py's tiny SDXL (a checkpoint round trip would add seconds, not coverage)."""
    torch.manual_seed(2)
    encoders = {"clip_l": CLIPTextEncoder(TINY_CLIP).eval(), "open_clip_g": OpenCLIPTextEncoder(TINY_OPEN_CLIP).eval()}
    return SimpleNamespace(config=SimpleNamespace(family="sdxl"), text_encoders=encoders)


def test_sdxl_crossattn_and_vector(sdxl, tok):
    options = ConditioningOptions(sdxl_crop_top=8, sdxl_crop_left=16)
    conditioner = TextConditioner(sdxl, options)
    long_text = " ".join(["cat"] * 80)
    texts = prompt_parser.SdConditioning(["a cat", long_text], width=832, height=1216)
    cond = conditioner.get_learned_conditioning(texts)
    clip_width, g_width = sdxl.text_encoders["clip_l"].hidden_size, sdxl.text_encoders["open_clip_g"].hidden_size
    assert cond["crossattn"].shape == (2, 154, clip_width + g_width)
    assert cond["vector"].shape == (2, TINY_UNETS["sdxl"].adm_in_channels)

    chunk = torch.tensor([tok.tokenize_padded(long_text[: len("cat ") * 75 - 1])])
    with torch.no_grad():
        clip_hidden = sdxl.text_encoders["clip_l"](chunk, skip_last_layers=1, apply_final_norm=False).hidden
        g_tokens = torch.tensor([pad_after_first_end(chunk[0].tolist(), EOS, 0)])
        g_out = sdxl.text_encoders["open_clip_g"](g_tokens, skip_last_layers=1, apply_final_norm=False)
    torch.testing.assert_close(cond["crossattn"][1:, :77], torch.cat([clip_hidden, g_out.hidden], dim=-1))
    sizes = torch.tensor([[1216.0, 832.0, 8.0, 16.0, 1216.0, 832.0]])
    torch.testing.assert_close(cond["vector"][1:], sdxl_adm_vector(g_out.pooled, sizes))


def test_sdxl_empty_negative_prompt_is_zero_and_refiner_uses_aesthetic_score(sdxl):
    conditioner = TextConditioner(sdxl)
    negative = conditioner.get_learned_conditioning(prompt_parser.SdConditioning([""], is_negative_prompt=True))
    assert negative["crossattn"].abs().max() == 0
    g_width = sdxl.text_encoders["open_clip_g"].hidden_size
    assert negative["vector"][:, :g_width].abs().max() == 0 and negative["vector"].abs().max() > 0
    assert conditioner.get_learned_conditioning([""])["crossattn"].abs().max() > 0

    refiner = TextConditioner(SimpleNamespace(family="sdxl_refiner",
                                              text_encoders={"open_clip_g": sdxl.text_encoders["open_clip_g"]}))
    positive = refiner.get_learned_conditioning(prompt_parser.SdConditioning(["a cat"], width=512, height=768))
    negative = refiner.get_learned_conditioning(
        prompt_parser.SdConditioning(["a cat"], width=512, height=768, is_negative_prompt=True))
    assert positive["crossattn"].shape == (1, 77, g_width)
    assert positive["vector"].shape == (1, g_width + 5 * 256)
    pooled = positive["vector"][:, :g_width]
    expected = sdxl_adm_vector(pooled, torch.tensor([[768.0, 512.0, 0.0, 0.0, 6.0]]))
    torch.testing.assert_close(positive["vector"], expected)
    expected_negative = sdxl_adm_vector(pooled, torch.tensor([[768.0, 512.0, 0.0, 0.0, 2.5]]))
    torch.testing.assert_close(negative["vector"], expected_negative)


def test_unknown_family_and_empty_batch_are_rejected(sd1):
    with pytest.raises(ValueError, match="family"):
        TextConditioner(SimpleNamespace(family="flux", text_encoders={})).get_learned_conditioning(["a"])
    with pytest.raises(ValueError, match="at least one"):
        TextConditioner(sd1[0]).get_learned_conditioning([])


def test_options_from_a1111_named_settings():
    options = ConditioningOptions.from_opts(SimpleNamespace(CLIP_stop_at_last_layers=2, emphasis="No norm",
                                                            sdxl_refiner_low_aesthetic_score=3.0))
    assert (options.clip_skip, options.emphasis, options.refiner_low_aesthetic_score) == (2, "No norm", 3.0)
    assert options.comma_padding_backtrack == 20 and options.sdxl_crop_top == 0
