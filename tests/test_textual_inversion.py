"""Tests for modules/textual_inversion.py: A1111's EmbeddingDatabase over recursive folders, wrong widths listed as
skipped, reload when a folder changes or the model's width changes, and the "TI hashes" value."""

from __future__ import annotations

import hashlib
import os
from types import SimpleNamespace

import torch
from safetensors.torch import save_file

from modules.textual_inversion import Embedding, EmbeddingDatabase


def model_of(*widths: int) -> SimpleNamespace:
    return SimpleNamespace(text_encoders={f"enc{i}": SimpleNamespace(hidden_size=w) for i, w in enumerate(widths)})


SD1, SDXL = model_of(768), model_of(768, 1280)


def char_ids(text: str) -> list[int]:
    return [ord(c) for c in text]


def populate(tmp_path):
    first, second = tmp_path / "embeddings", tmp_path / "extension_embeddings"
    (first / "sub" / "deeper").mkdir(parents=True)
    second.mkdir()
    torch.save({"string_to_param": {"*": torch.randn(2, 768)}, "step": 10}, first / "Zeta.pt")
    save_file({"<tok>": torch.randn(1, 768)}, str(first / "sub" / "deeper" / "alpha.safetensors"))
    save_file({"v": torch.randn(1, 1024)}, str(first / "sub" / "sd2only.safetensors"))
    save_file({"clip_l": torch.randn(3, 768), "clip_g": torch.randn(3, 1280)}, str(second / "xlneg.safetensors"))
    (second / "empty.pt").write_bytes(b"")
    (second / "broken.safetensors").write_bytes(b"\x00" * 16)
    db = EmbeddingDatabase(char_ids)
    db.add_embedding_dir(first)
    db.add_embedding_dir(second)
    return db, first, second


def test_load_filters_by_width_and_walks_recursively(tmp_path):
    db, first, second = populate(tmp_path)
    assert db.load_textual_inversion_embeddings(model=SD1)
    assert list(db.word_embeddings) == ["alpha", "Zeta"]  # sorted case-insensitively, like A1111
    assert sorted(db.skipped_embeddings) == ["sd2only", "xlneg"] and db.expected_shape == 768
    assert list(db.load_errors) == [str(second / "broken.safetensors")]
    assert db.word_embeddings["Zeta"].step == 10

    tokens = char_ids("a Zeta b")
    assert db.find_embedding_at_position(tokens, 2) == (db.word_embeddings["Zeta"], 4)
    assert db.find_embedding_at_position(tokens, 0) == (None, None)
    assert db.find_at(tokens, 2) == (db.word_embeddings["Zeta"], 4)

    assert db.load_textual_inversion_embeddings(model=SDXL)  # another width: reload
    assert list(db.word_embeddings) == ["xlneg"] and set(db.word_embeddings["xlneg"].vectors) == {"clip_l", "clip_g"}
    assert sorted(db.skipped_embeddings) == ["Zeta", "alpha", "sd2only"]


def test_reload_only_when_a_folder_changes(tmp_path):
    db, first, _ = populate(tmp_path)
    db.load_textual_inversion_embeddings(model=SD1)
    assert not db.load_textual_inversion_embeddings(model=SD1)
    deeper = first / "sub" / "deeper"
    torch.save({"string_to_param": {"*": torch.randn(1, 768)}}, deeper / "new.pt")
    future = os.path.getmtime(deeper) + 5  # coarse file-system clocks: make the change visible
    os.utime(deeper, (future, future))
    assert db.load_textual_inversion_embeddings()
    assert "new" in db.word_embeddings and db.expected_shape == 768
    assert db.load_textual_inversion_embeddings(force_reload=True)


def test_register_by_name_and_ti_hashes(tmp_path):
    db, first, _ = populate(tmp_path)
    db.load_textual_inversion_embeddings(model=SD1)
    manual = Embedding(torch.zeros(1, 768), "manual")
    db.register_embedding(manual, None)
    assert db.find_at(char_ids("manual"), 0) == (manual, 6)
    db.register_embedding_by_name(None, None, "manual")
    assert db.find_at(char_ids("manual"), 0) is None and "manual" not in db.word_embeddings
    zeta = db.word_embeddings["Zeta"]
    expected = hashlib.sha256((first / "Zeta.pt").read_bytes()).hexdigest()[:12]
    assert db.ti_hashes([zeta, zeta]) == f"Zeta: {expected}"
