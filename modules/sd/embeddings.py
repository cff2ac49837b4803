"""Textual-inversion embeddings: reading the file formats A1111 accepts, and finding embedding names in token ids.

Pure: no global model, no settings. `modules.textual_inversion` wraps this in A1111's `EmbeddingDatabase` (folders,
reload on change, the skipped list).

Formats (name = file stem unless an image carries one):

* ``.pt`` / ``.bin`` — A1111 / original TI: ``{"string_to_param": {"*": [n, dim]}, "step", "sd_checkpoint",
  "sd_checkpoint_name", ...}``, read with the restricted unpickler; a diffusers concept pickle ``{token: [dim]}``.
* ``.safetensors`` — one ``{token: [n, dim]}`` (diffusers concept; a 1-D vector is one token), or SDXL's pair
  ``{"clip_l": [n, 768], "clip_g": [n, 1280]}``.
* ``.png`` / ``.webp`` / ``.jxl`` / ``.avif`` with A1111's ``sd-ti-embedding`` text chunk (base64 JSON); images
  without it are previews and are ignored, as are ``*.preview.*`` files. (Data hidden in the pixels is not read.)

Lookup (A1111's ``find_embedding_at_position``): each name is tokenized once; candidates are indexed by their first
token id and kept longest first, so at any position the longest exact token-id match wins.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from modules.errors import AtelierError
from modules.sd.checkpoint import SafetensorsFile, load_pickle_checkpoint

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".pt", ".bin")
IMAGE_SUFFIXES = (".png", ".webp", ".jxl", ".avif")
EMBEDDING_SUFFIXES = (*PICKLE_SUFFIXES, ".safetensors", *IMAGE_SUFFIXES)
SDXL_PARTS = ("clip_l", "clip_g")


class BadEmbeddingFile(AtelierError):
    """A file in an embeddings folder that cannot be read as a textual-inversion embedding."""


@dataclass(eq=False)
class Embedding:
    """One textual-inversion embedding. ``vectors``: [n, dim], or {"clip_l": [n, 768], "clip_g": [n, 1280]} for SDXL.

    The constructor order (vectors, name, step) is A1111's ``Embedding(vec, name, step)``; ``vec`` is an alias.
    """

    vectors: Tensor | dict[str, Tensor]
    name: str
    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None
    filename: str | None = None
    _hash: str | None = field(default=None, repr=False)

    @property
    def vec(self) -> Tensor | dict[str, Tensor]:
        return self.vectors

    @property
    def num_vectors(self) -> int:
        """Tokens this embedding occupies in a prompt (A1111 calls this ``vectors``)."""
        first = self.vectors["clip_g"] if isinstance(self.vectors, dict) else self.vectors
        return first.shape[0]

    @property
    def shape(self) -> int:
        """Vector width; for SDXL the sum of both parts (2048), as A1111 compares it with the model's width."""
        if isinstance(self.vectors, dict):
            return sum(v.shape[-1] for v in self.vectors.values())
        return self.vectors.shape[-1]

    @property
    def hash(self) -> str:
        """Full sha256 of the file (A1111's "TI hashes" use the first 12 digits); computed on first use."""
        if self._hash is None:
            self._hash = _sha256(self.filename) if self.filename else ""
        return self._hash

    @property
    def shorthash(self) -> str:
        return self.hash[:12]

    def set_hash(self, value: str) -> None:
        self._hash = value


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def _as_vectors(value: object, filename: str) -> Tensor:
    if not isinstance(value, Tensor) or not value.is_floating_point():
        raise BadEmbeddingFile(f"{filename}: the embedding is not a float tensor ({type(value).__name__}).")
    value = value.detach().to(dtype=torch.float32, device="cpu")
    if value.dim() == 1:
        value = value.unsqueeze(0)
    if value.dim() != 2:
        raise BadEmbeddingFile(f"{filename}: expected vectors of shape [tokens, width], got {tuple(value.shape)}.")
    return value


def embedding_from_data(data: Mapping, name: str, filename: str = "") -> Embedding:
    """Build an `Embedding` from a loaded file's contents (any of the formats in the module docstring)."""
    label = filename or name
    if "string_to_param" in data:
        params = data["string_to_param"]
        params = getattr(params, "_parameters", params)  # torch 1.11 saved a ParameterDict
        if not isinstance(params, Mapping) or len(params) != 1:
            raise BadEmbeddingFile(f"{label}: string_to_param must hold exactly one term.")
        vectors: Tensor | dict[str, Tensor] = _as_vectors(next(iter(params.values())), label)
    elif all(part in data for part in SDXL_PARTS):
        vectors = {part: _as_vectors(data[part], label) for part in SDXL_PARTS}
        if vectors["clip_l"].shape[0] != vectors["clip_g"].shape[0]:
            raise BadEmbeddingFile(f"{label}: clip_l and clip_g have different token counts.")
    else:
        tensors = {k: v for k, v in data.items() if isinstance(v, Tensor)}
        if len(tensors) != 1:
            raise BadEmbeddingFile(f"{label} is neither a textual-inversion embedding nor a diffusers concept "
                                   f"({len(tensors)} tensors, expected one).",
                                   "Embedding files hold string_to_param, one {token: vectors} pair, or clip_l+clip_g.")
        vectors = _as_vectors(next(iter(tensors.values())), label)
    step = data.get("step")
    return Embedding(
        vectors,
        name,
        step=int(step) if isinstance(step, int | float) else None,
        sd_checkpoint=_str_or_none(data.get("sd_checkpoint")),
        sd_checkpoint_name=_str_or_none(data.get("sd_checkpoint_name")),
        filename=filename or None,
    )


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def _decode_image_payload(text: str) -> dict:
    """A1111's ``embedding_from_b64``: base64 JSON whose tensors are ``{"TORCHTENSOR": nested lists}``."""

    def as_tensor(obj: dict) -> object:
        return torch.tensor(obj["TORCHTENSOR"], dtype=torch.float32) if "TORCHTENSOR" in obj else obj

    return json.loads(base64.b64decode(text), object_hook=as_tensor)


def load_embedding_file(path: str | os.PathLike[str]) -> Embedding | None:
    """Read one embedding file; None for files that are not embeddings by design (previews, other suffixes).

    Raises `BadEmbeddingFile` for files that should be embeddings but cannot be read.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    name = path.stem
    try:
        if suffix in IMAGE_SUFFIXES:
            if Path(name).suffix.lower() == ".preview":
                return None
            from PIL import Image

            with Image.open(path) as image:
                payload = getattr(image, "text", {}).get("sd-ti-embedding") or image.info.get("sd-ti-embedding")
            if not payload:
                return None  # a preview image, or data hidden in pixels (not supported)
            data = _decode_image_payload(payload)
            name = str(data.get("name") or name)
        elif suffix in PICKLE_SUFFIXES:
            data = load_pickle_checkpoint(path)
        elif suffix == ".safetensors":
            with SafetensorsFile(path) as f:
                data = {key: f.read(key) for key in f}
        else:
            return None
    except AtelierError:
        raise
    except Exception as e:  # Pillow, base64 and json raise many kinds for damaged files
        raise BadEmbeddingFile(f"{path.name} could not be read: {type(e).__name__}: {e}") from e
    if not isinstance(data, Mapping):
        raise BadEmbeddingFile(f"{path.name} does not hold a dictionary of tensors ({type(data).__name__}).")
    return embedding_from_data(data, name, str(path))


def expected_embedding_width(model: object) -> int:
    """The vector width a model's embeddings must have: 768 SD1, 1024 SD2, 768 + 1280 SDXL (the encoders' sum)."""
    encoders = getattr(model, "text_encoders", {}) or {}
    return sum(int(encoder.hidden_size) for encoder in encoders.values())


class EmbeddingLookup:
    """Embedding names as token-id sequences, indexed by first id; at a position the longest exact match wins.

    Implements the interface the prompt chunker uses: ``find_at(token_ids, offset) -> (embedding, length) | None``.
    """

    def __init__(self, tokenize: Callable[[str], list[int]] | None = None) -> None:
        self._tokenize = tokenize
        self.ids_lookup: dict[int, list[tuple[list[int], Embedding]]] = {}
        self._registered: dict[str, tuple[list[int], Embedding]] = {}

    def tokenize(self, text: str) -> list[int]:
        if self._tokenize is None:
            from modules.sd.tokenizer import get_clip_tokenizer

            self._tokenize = get_clip_tokenizer().encode
        return list(self._tokenize(text))

    def register(self, embedding: Embedding, name: str | None = None) -> bool:
        """Make `embedding` findable under `name` (default: its own), replacing an earlier one of that name."""
        name = embedding.name if name is None else name
        self.unregister(name)
        ids = self.tokenize(name)
        if not ids:
            return False
        candidates = self.ids_lookup.setdefault(ids[0], [])
        candidates.append((ids, embedding))
        candidates.sort(key=lambda item: len(item[0]), reverse=True)  # stable: equal lengths keep their order
        self._registered[name] = (ids, embedding)
        return True

    def unregister(self, name: str) -> None:
        entry = self._registered.pop(name, None)
        if entry is None:
            return
        ids, embedding = entry
        remaining = [item for item in self.ids_lookup.get(ids[0], []) if item[1] is not embedding or item[0] != ids]
        if remaining:
            self.ids_lookup[ids[0]] = remaining
        else:
            self.ids_lookup.pop(ids[0], None)

    def clear(self) -> None:
        self.ids_lookup.clear()
        self._registered.clear()

    def find_at(self, token_ids: Sequence[int], offset: int) -> tuple[Embedding, int] | None:
        """The embedding whose name's ids start at ``token_ids[offset]`` (longest match), with that id count."""
        for ids, embedding in self.ids_lookup.get(token_ids[offset], ()):
            if list(token_ids[offset: offset + len(ids)]) == ids:
                return embedding, len(ids)
        return None
