"""Tests for modules/sd/tokenizer.py (and the vocabulary loader in modules/sd/clip_vocab.py)."""

from __future__ import annotations

import json
import random
import time

import pytest

from modules.sd.clip_vocab import END_TOKEN, START_TOKEN, load_clip_bpe
from modules.sd.tokenizer import CLIPTokenizer, get_clip_tokenizer

# fmt: off
FRAGMENTS = [
    "a photo of a cat", "masterpiece", "best quality", "(red hair:1.2)", "[blue eyes]", "((detailed))",
    "(worst quality:1.4)", "<lora:x:1>", "<lora:add_detail:0.75>", "<hypernet:foo_bar:0.5>", "BREAK", "AND",
    "don't", "it's", "we're", "you've", "I'm", "they'll", "he'd", "it''s", "rock'n'roll", "Don’t", "O'NEILL",
    "café", "naïve", "Ångström", "über-cool", "Straße", "ΑΣ ΟΔΟΣ", "İstanbul", "Ǆemal", "ﬁne", "ＦＵＬＬ width",
    "日本の風景", "中文提示词", "한국어", "кошка на крыше", "عربي", "हिन्दी", "ไทย", "e\u0301te\u0301",
    "🐱", "🐱🐶", "👩‍🚀", "❤️", "🇫🇷 flag", "☀ sun", "★★★", "♥", "→", "©2024", "™", "°C",
    "1girl", "2boys", "3d render", "8k uhd", "1920x1080", "3.14159", "1,000,000", "v1.5", "x²", "½ cup", "Ⅻ",
    "42", "007", "HDR", "RAW photo", "DSLR", "iPhone", "McDonald's", "CamelCaseWord", "snake_case_word",
    "kebab-case-word", "well-lit", "hyper-realistic", "state-of-the-art", "__wildcard__", "a_b_c", "x--y",
    "pneumonoultramicroscopicsilicovolcanoconiosis", "supercalifragilisticexpialidocious", "aaaaaaaaaaaaaaaa",
    "Llanfairpwllgwyngyll", "!!!", "???", "...", "—", "–", "“quoted”", '"quoted"', "'single'", "`tick`",
    "&amp;", "&lt;tag&gt;", "<b>bold</b>", "a&b", "50%", "$100", "#hashtag", "@user", "email@example.com",
    "https://example.com/a?b=c", "C:\\path\\file.png", "/usr/bin", "{curly}", "a|b", "a:b", "a;b", "a=b", "~tilde",
    "^caret", "*star*", "+plus", "<|startoftext|>", "<|endoftext|>", "<|STARTOFTEXT|>", "<<|endoftext|>>",
    "Hello World", "MiXeD cAsE", "ALL CAPS", "tab\there", "new\nline", "cr\r\nlf", "  leading", "trailing  ",
    "multiple     spaces", "\u00a0nbsp\u00a0", "zero\u200bwidth", "\x1cctrl\x1f", "a\x00b", "\u3000ideographic",
]
SEPARATORS = [" ", ", ", ",", "  ", "\n", " | ", ". ", "; ", "\t", "", " BREAK ", ":"]
# fmt: on


def generated_prompts(count: int = 240, seed: int = 1234) -> list[str]:
    """A1111-style prompts: fragments joined by assorted separators, some weighted, some case-mangled."""
    rng = random.Random(seed)
    prompts = list(FRAGMENTS)
    while len(prompts) < count + len(FRAGMENTS):
        parts = rng.sample(FRAGMENTS, rng.randint(1, 8))
        parts = [f"({p}:{rng.choice([0.5, 1.1, 1.25, 2])})" if rng.random() < 0.2 else p for p in parts]
        text = "".join(part + rng.choice(SEPARATORS) for part in parts)
        if rng.random() < 0.2:
            text = text.upper()
        prompts.append(text)
    return prompts


@pytest.fixture(scope="module")
def reference_tokenizer(tmp_path_factory):
    """transformers' CLIPTokenizer built offline from vocab.json/merges.txt written from the same gz data."""
    transformers = pytest.importorskip("transformers")
    vocab, merges = load_clip_bpe()
    folder = tmp_path_factory.mktemp("clip_tokenizer")
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2", *(" ".join(pair) for pair in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return transformers.CLIPTokenizer.from_pretrained(str(folder), model_max_length=77)


def test_vocabulary_layout():
    vocab, merges = load_clip_bpe()
    assert len(vocab) == 49408
    assert len(merges) == 48894
    assert vocab["!"] == 0
    assert vocab["!</w>"] == 256
    assert vocab[START_TOKEN] == 49406
    assert vocab[END_TOKEN] == 49407


def test_known_ids():
    tokenizer = get_clip_tokenizer()
    assert tokenizer.encode("a photo of a cat") == [320, 1125, 539, 320, 2368]
    assert tokenizer.encode("A   Photo\nof a CAT") == [320, 1125, 539, 320, 2368]
    assert tokenizer.encode("") == []
    assert tokenizer.token_to_id("cat</w>") == 2368
    assert tokenizer.id_to_token(2368) == "cat</w>"
    assert tokenizer.token_to_id("not-a-token") is None
    assert tokenizer.vocab_size == 49408


def test_ids_match_transformers(reference_tokenizer):
    """Reference: transformers 5.x CLIPTokenizer (tokenizers backend) on the same vocabulary; ids must be identical."""
    tokenizer = CLIPTokenizer()
    prompts = generated_prompts()
    assert len(prompts) >= 200
    mismatches = []
    for prompt in prompts:
        expected = reference_tokenizer(prompt, add_special_tokens=False).input_ids
        if tokenizer.encode(prompt) != expected:
            mismatches.append(prompt)
    assert mismatches == []


def test_padded_ids_match_transformers(reference_tokenizer):
    """Reference: transformers with padding='max_length', truncation, 77 tokens (how SD1 pipelines call it)."""
    tokenizer = get_clip_tokenizer()
    for prompt in ["a photo of a cat", "", "word " * 100]:
        expected = reference_tokenizer(prompt, padding="max_length", max_length=77, truncation=True).input_ids
        assert tokenizer.tokenize_padded(prompt, 77, pad_with_eos=True) == expected


def test_padding_rules():
    tokenizer = get_clip_tokenizer()
    sd1 = tokenizer.tokenize_padded("a photo of a cat", length=10, pad_with_eos=True)
    assert sd1 == [49406, 320, 1125, 539, 320, 2368, 49407, 49407, 49407, 49407]
    openclip = tokenizer.tokenize_padded("a photo of a cat", length=10, pad_with_eos=False)
    assert openclip == [49406, 320, 1125, 539, 320, 2368, 49407, 0, 0, 0]
    truncated = tokenizer.tokenize_padded("cat " * 100, length=77)
    assert len(truncated) == 77
    assert truncated[0] == 49406 and truncated[-1] == 49407 and truncated[1:-1] == [2368] * 75


def test_decode_round_trip(reference_tokenizer):
    tokenizer = get_clip_tokenizer()
    for text in ["a photo of a cat", "masterpiece, best quality, (red hair:1.2)", "café 日本 🐱", "don't stop"]:
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids).replace(" ", "") == text.replace(" ", "")
        assert tokenizer.decode(ids) == reference_tokenizer.decode(ids)
    assert tokenizer.decode(tokenizer.encode("A Photo  of A CAT")) == "a photo of a cat"


def test_special_literals_follow_transformers():
    tokenizer = get_clip_tokenizer()
    assert tokenizer.encode("x<|endoftext|>y") == [343, 49407, 344]
    assert tokenizer.encode("&amp;") == [261, 6259, 282]  # no HTML unescaping (open_clip would give '&')


def test_construction_is_fast():
    load_clip_bpe()  # the file read is shared and cached; building a tokenizer from it must stay cheap
    start = time.perf_counter()
    CLIPTokenizer().encode("a photo of a cat")
    assert time.perf_counter() - start < 1.0
    assert get_clip_tokenizer() is get_clip_tokenizer()
