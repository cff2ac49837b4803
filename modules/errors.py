"""Errors a user can fix, each with a message and a hint. The API maps them to 4xx JSON, the UI to a visible message.

Core modules raise these instead of bare exceptions so every face reports the same clear words.
"""

from __future__ import annotations


class AtelierError(Exception):
    """Base class: `message` says what is wrong, `hint` what to do about it."""

    status_code = 400

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}".strip()


class InvalidRequest(AtelierError):
    status_code = 422


class ModelNotFound(AtelierError):
    status_code = 404


class BadCheckpoint(AtelierError):
    """A model file that cannot be read: corrupt, truncated, unsafe or of an unknown kind."""

    status_code = 400


class MissingWeights(AtelierError):
    status_code = 404
