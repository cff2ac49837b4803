"""Translation failures that name their cause, each with a hint; the UI shows them, the API returns them as JSON.

They extend Atelier's :class:`modules.errors.AtelierError`, so message, hint and HTTP status work as everywhere else.
"""

from __future__ import annotations

from modules.errors import AtelierError


class TranslationError(AtelierError):
    status_code = 502


class InvalidTranslationRequest(TranslationError):
    status_code = 422


class ServerUnreachable(TranslationError):
    status_code = 502


class AuthenticationFailed(TranslationError):
    status_code = 401


class UnknownModel(TranslationError):
    status_code = 404

    def __init__(self, message: str, hint: str = "", available: list[str] | None = None) -> None:
        super().__init__(message, hint)
        self.available = available or []


class ContextLengthExceeded(TranslationError):
    status_code = 413


class ServerTimeout(TranslationError):
    status_code = 504


class StreamInterrupted(TranslationError):
    status_code = 502


class ServerRejected(TranslationError):
    """Any other error status from the server, with the server's own message."""

    status_code = 502


class LocalModelError(TranslationError):
    status_code = 404


class VerifyUnavailable(TranslationError):
    status_code = 422


class VerifyRefused(TranslationError):
    """Running code was asked for on a server that listens beyond this machine."""

    status_code = 403


def describe(error: Exception) -> str:
    """One line for a status display: the message and the hint, or the exception's type and text."""
    if isinstance(error, AtelierError):
        return f"{error.message} {error.hint}".strip()
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
