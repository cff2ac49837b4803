"""Tests for modules/sd/embeddings.py: every file format A1111 reads, refusal of unsafe pickles, and the
longest-match lookup (A1111's find_embedding_at_position)."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace

import pytest
import torch
from PIL import Image, PngImagePlugin
from safetensors.torch import save_file

from modules.errors import AtelierError
from modules.sd import embeddings as emb


def test_a1111_pt_file(tmp_path):
    vectors = torch.randn(3, 768)
    data = {"string_to_token": {"*": 265}, "string_to_param": {"*": torch.nn.Parameter(vectors)}, "name": "x",
            "step": 1500, "sd_checkpoint": "abcdef12", "sd_checkpoint_name": "v1-5-pruned"}
    torch.save(data, tmp_path / "my-style.pt")
    e = emb.load_embedding_file(tmp_path / "my-style.pt")
    assert e.name == "my-style" and e.step == 1500 and e.sd_checkpoint == "abcdef12"
    assert e.sd_checkpoint_name == "v1-5-pruned" and e.num_vectors == 3 and e.shape == 768
    assert torch.equal(e.vectors, vectors) and e.vec is e.vectors and not e.vectors.requires_grad


def test_diffusers_concepts_bin_and_safetensors(tmp_path):
    torch.save({"<cat-toy>": torch.randn(768)}, tmp_path / "learned_embeds.bin")
    e = emb.load_embedding_file(tmp_path / "learned_embeds.bin")
    assert e.name == "learned_embeds" and e.vectors.shape == (1, 768)
    save_file({"emb_params": torch.randn(2, 1024, dtype=torch.float16)}, str(tmp_path / "sd2thing.safetensors"))
    e = emb.load_embedding_file(tmp_path / "sd2thing.safetensors")
    assert e.vectors.dtype == torch.float32 and e.shape == 1024 and e.num_vectors == 2 and e.step is None


def test_sdxl_pair(tmp_path):
    save_file({"clip_l": torch.randn(4, 768), "clip_g": torch.randn(4, 1280)}, str(tmp_path / "negXL.safetensors"))
    e = emb.load_embedding_file(tmp_path / "negXL.safetensors")
    assert set(e.vectors) == {"clip_l", "clip_g"} and e.vectors["clip_g"].shape == (4, 1280)
    assert e.shape == 2048 and e.num_vectors == 4


def test_png_text_chunk_and_previews(tmp_path):
    payload = {"string_to_param": {"*": {"TORCHTENSOR": [[0.5] * 8, [1.0] * 8]}}, "name": "from-png", "step": 7}
    info = PngImagePlugin.PngInfo()
    info.add_text("sd-ti-embedding", base64.b64encode(json.dumps(payload).encode()).decode())
    Image.new("RGB", (8, 8)).save(tmp_path / "card.png", pnginfo=info)
    e = emb.load_embedding_file(tmp_path / "card.png")
    assert e.name == "from-png" and e.step == 7 and e.vectors.shape == (2, 8)
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "card.preview.png", pnginfo=info)
    assert emb.load_embedding_file(tmp_path / "plain.png") is None
    assert emb.load_embedding_file(tmp_path / "card.preview.png") is None
    assert emb.load_embedding_file(tmp_path / "readme.txt") is None


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_bad_and_unsafe_files_raise(tmp_path):
    save_file({"a": torch.zeros(1, 8), "b": torch.zeros(1, 8)}, str(tmp_path / "two.safetensors"))
    with pytest.raises(emb.BadEmbeddingFile, match="neither"):
        emb.load_embedding_file(tmp_path / "two.safetensors")
    torch.save({"string_to_param": {"*": Payload()}}, tmp_path / "evil.pt")
    with pytest.raises(AtelierError, match="refused"):
        emb.load_embedding_file(tmp_path / "evil.pt")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(emb.BadEmbeddingFile):
        emb.load_embedding_file(tmp_path / "broken.png")


def test_expected_width():
    def encoders(*widths: int) -> SimpleNamespace:
        return SimpleNamespace(text_encoders={str(w): SimpleNamespace(hidden_size=w) for w in widths})

    assert emb.expected_embedding_width(encoders(768)) == 768
    assert emb.expected_embedding_width(encoders(1024)) == 1024
    assert emb.expected_embedding_width(encoders(768, 1280)) == 2048


def char_ids(text: str) -> list[int]:
    return [ord(c) for c in text]


def make(name: str) -> emb.Embedding:
    return emb.Embedding(torch.zeros(1, 4), name)


def test_longest_match_wins_and_reregistering_replaces():
    lookup = emb.EmbeddingLookup(char_ids)
    ab, abc, b = make("ab"), make("abc"), make("b")
    for e in (ab, abc, b):
        assert lookup.register(e)
    tokens = char_ids("xabcab")
    assert lookup.find_at(tokens, 0) is None
    assert lookup.find_at(tokens, 1) == (abc, 3)
    assert lookup.find_at(tokens, 2) == (b, 1)
    assert lookup.find_at(tokens, 4) == (ab, 2)  # "abc" does not fit at the end
    assert [len(ids) for ids, _ in lookup.ids_lookup[ord("a")]] == [3, 2]
    newer = make("abc")
    lookup.register(newer)
    assert lookup.find_at(tokens, 1) == (newer, 3) and len(lookup.ids_lookup[ord("a")]) == 2
    lookup.unregister("abc")
    assert lookup.find_at(tokens, 1) == (ab, 2)
    assert not lookup.register(make(""))


def test_lookup_with_the_clip_tokenizer():
    lookup = emb.EmbeddingLookup()
    style = make("my-style")
    lookup.register(style)
    ids = lookup.tokenize("a photo in my-style, detailed")
    start = next(i for i in range(len(ids)) if lookup.find_at(ids, i))
    assert lookup.find_at(ids, start) == (style, len(lookup.tokenize("my-style")))
