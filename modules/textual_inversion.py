"""A1111's textual-inversion database (``modules.textual_inversion.textual_inversion``), for the app and extensions.

Extensions read ``word_embeddings``, ``skipped_embeddings``, ``ids_lookup``, ``expected_shape``, ``embedding_dirs``
and call ``register_embedding``, ``find_embedding_at_position`` and ``load_textual_inversion_embeddings``; those keep
A1111's names and meaning. One difference: A1111 reads the global ``shared.sd_model``; here the model is passed to
``load_textual_inversion_embeddings(model=...)``, and only its text-encoder width is used (files of another width are
listed in ``skipped_embeddings``, not loaded). The database is itself the prompt chunker's ``embedding_lookup``
(``find_at``).

Folders are walked recursively and reloaded when any folder's mtime changes (A1111 watches only the top folder's).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

from modules.errors import AtelierError
from modules.sd.embeddings import (
    BadEmbeddingFile,
    Embedding,
    EmbeddingLookup,
    expected_embedding_width,
    load_embedding_file,
)

__all__ = ["BadEmbeddingFile", "DirWithTextualInversionEmbeddings", "Embedding", "EmbeddingDatabase"]

log = logging.getLogger(__name__)


class DirWithTextualInversionEmbeddings:
    """One embeddings folder and the newest mtime of it and its subfolders when it was last read."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self.mtime: float | None = None

    def tree_mtime(self) -> float | None:
        """Newest mtime of the folder and its subfolders (adding/removing a file changes its folder's mtime)."""
        if not os.path.isdir(self.path):
            return None
        newest = os.path.getmtime(self.path)
        for root, dirs, _files in os.walk(self.path, followlinks=True):
            for d in dirs:
                try:
                    newest = max(newest, os.path.getmtime(os.path.join(root, d)))
                except OSError:
                    continue
        return newest

    def has_changed(self) -> bool:
        mtime = self.tree_mtime()
        return mtime is not None and (self.mtime is None or mtime > self.mtime)

    def update(self) -> None:
        mtime = self.tree_mtime()
        if mtime is not None:
            self.mtime = mtime


class EmbeddingDatabase:
    """All embeddings found in the registered folders that fit the current model, findable by token ids."""

    def __init__(self, tokenize: Callable[[str], list[int]] | None = None) -> None:
        self.lookup = EmbeddingLookup(tokenize)
        self.word_embeddings: dict[str, Embedding] = {}
        self.skipped_embeddings: dict[str, Embedding] = {}
        self.load_errors: dict[str, str] = {}  # file path -> message, for the UI
        self.expected_shape = -1
        self.embedding_dirs: dict[str, DirWithTextualInversionEmbeddings] = {}

    @property
    def ids_lookup(self) -> dict[int, list[tuple[list[int], Embedding]]]:
        """first token id -> [(token ids, embedding)], longest first (A1111's structure)."""
        return self.lookup.ids_lookup

    def add_embedding_dir(self, path: str | os.PathLike[str]) -> None:
        self.embedding_dirs[str(path)] = DirWithTextualInversionEmbeddings(path)

    def clear_embedding_dirs(self) -> None:
        self.embedding_dirs.clear()

    def register_embedding(self, embedding: Embedding, model: object = None) -> Embedding:
        """Make `embedding` usable in prompts under its name (`model` is accepted for A1111 compatibility)."""
        return self.register_embedding_by_name(embedding, model, embedding.name)

    def register_embedding_by_name(self, embedding: Embedding | None, model: object, name: str) -> Embedding | None:
        """Register under `name`, or unregister that name when `embedding` is None (A1111 semantics)."""
        if embedding is None:
            self.lookup.unregister(name)
            self.word_embeddings.pop(name, None)
            return None
        if self.lookup.register(embedding, name):
            self.word_embeddings[name] = embedding
        else:
            log.warning("Embedding name %r has no tokens; it cannot be used in prompts.", name)
        return embedding

    def load_from_file(self, path: str | os.PathLike[str], filename: str | None = None) -> Embedding | None:
        """Load one file and register it, or list it as skipped when its width does not fit the model."""
        embedding = load_embedding_file(path)
        if embedding is None:
            return None
        if self.expected_shape in (-1, embedding.shape):
            self.register_embedding(embedding)
        else:
            self.skipped_embeddings[embedding.name] = embedding
        return embedding

    def load_from_dir(self, embdir: DirWithTextualInversionEmbeddings) -> None:
        if not os.path.isdir(embdir.path):
            return
        for root, dirs, files in os.walk(embdir.path, followlinks=True):
            dirs.sort()
            for filename in sorted(files):
                full = os.path.join(root, filename)
                try:
                    if os.stat(full).st_size == 0:
                        continue
                    self.load_from_file(full, filename)
                except (AtelierError, OSError) as e:
                    self.load_errors[full] = str(e)
                    log.warning("Error loading embedding %s: %s", filename, e)

    def load_textual_inversion_embeddings(self, force_reload: bool = False, model: object = None) -> bool:
        """(Re)load all folders if forced, if a folder changed, or if `model` needs another width; True if reloaded."""
        expected = expected_embedding_width(model) if model is not None else self.expected_shape
        changed = any(d.has_changed() for d in self.embedding_dirs.values())
        if not (force_reload or changed or expected != self.expected_shape):
            return False
        self.lookup.clear()
        self.word_embeddings.clear()
        self.skipped_embeddings.clear()
        self.load_errors.clear()
        self.expected_shape = expected
        for embdir in self.embedding_dirs.values():
            self.load_from_dir(embdir)
            embdir.update()
        ordered = sorted(self.word_embeddings.values(), key=lambda e: e.name.lower())
        self.word_embeddings.clear()  # in place: others may hold a reference to this dict
        self.word_embeddings.update({e.name: e for e in ordered})
        log.info("Textual inversion embeddings loaded (%d): %s", len(self.word_embeddings),
                 ", ".join(self.word_embeddings))
        if self.skipped_embeddings:
            log.info("Textual inversion embeddings skipped (%d): %s", len(self.skipped_embeddings),
                     ", ".join(self.skipped_embeddings))
        return True

    def find_embedding_at_position(self, tokens: Sequence[int], offset: int) -> tuple[Embedding | None, int | None]:
        """A1111's form of `find_at`: (embedding, token count) or (None, None)."""
        found = self.lookup.find_at(tokens, offset)
        return found if found is not None else (None, None)

    def find_at(self, token_ids: Sequence[int], offset: int) -> tuple[Embedding, int] | None:
        """The prompt chunker's interface: the longest embedding name starting at `offset`, or None."""
        return self.lookup.find_at(token_ids, offset)

    def ti_hashes(self, used: Sequence[Embedding]) -> str:
        """A1111's "TI hashes" value for one prompt: ``name: <first 12 hex of the file's sha256>``, once per name."""
        parts = []
        for embedding in used:
            if embedding.shorthash:
                parts.append(f"{embedding.name.replace(':', '').replace(',', '')}: {embedding.shorthash}")
        return ", ".join(dict.fromkeys(parts))

