"""Errors a user can fix: each carries a message and a hint, and an HTTP status for the API face.

They subclass Atelier's ``AtelierError`` so the app's error handlers (and the UI's ``error_html``) show them as they
show the core's own errors.
"""

from __future__ import annotations

from pathlib import Path

from modules.errors import AtelierError


class PreprocessorError(AtelierError):
    """A preprocessor cannot run on this input: bad image, bad parameter, unknown name (HTTP 422)."""

    status_code = 422


class UnknownPreprocessor(PreprocessorError):
    """The name is not in the registry; the message lists the names that are."""


class PreprocessorUnavailable(PreprocessorError):
    """The request is fine but the server lacks what the preprocessor needs (a weight file, a package).

    HTTP 424 Failed Dependency: the request could succeed unchanged once the server side is fixed, which is what
    424 says and 4xx "your request is wrong" codes (422, 404) do not.
    """

    status_code = 424


# Where each file is published (the user downloads it; Atelier never does).
WEIGHT_SOURCES = {"sam_vit_h_4b8939.pth": "the Hugging Face repository ybelkada/segment-anything (checkpoints/)"}
DEFAULT_SOURCE = "the Hugging Face repository lllyasviel/Annotators"


class MissingAnnotatorWeights(PreprocessorUnavailable):
    """A weight file is not in the annotators folder; ``filename`` and ``folder`` say what to put where."""

    def __init__(self, preprocessor: str, filename: str, folder: Path, alternative: str = "") -> None:
        self.preprocessor, self.filename, self.folder = preprocessor, filename, Path(folder)
        source = WEIGHT_SOURCES.get(filename, DEFAULT_SOURCE)
        super().__init__(
            f"The {preprocessor} preprocessor needs the weight file {filename}, which is not in {self.folder}.",
            f"Download {filename} (e.g. from {source}) and put it in {self.folder}; Atelier never downloads it by "
            f"itself.{' ' + alternative if alternative else ''}")


class BadAnnotatorWeights(PreprocessorUnavailable):
    """A weight file is there but cannot be loaded (truncated download, another model's file)."""
