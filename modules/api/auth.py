"""HTTP Basic auth of the ``/sdapi`` routes from ``--api-auth user:pass[,user:pass]``."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from fastapi import Depends
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from modules.credentials import parse_credentials
from modules.errors import AtelierError


def parse_api_credentials(text: str | None) -> dict[str, str]:
    """``--api-auth`` as ``{user: password}``."""
    return dict(parse_credentials(text))


def basic_auth_dependency(credentials: dict[str, str]) -> Callable[..., None]:
    """A FastAPI dependency accepting only the given users (401 with ``WWW-Authenticate: Basic`` otherwise)."""
    security = HTTPBasic(auto_error=False)

    def check(given: HTTPBasicCredentials | None = Depends(security)) -> None:  # noqa: B008 - FastAPI idiom
        if given is not None and given.username in credentials and secrets.compare_digest(
                given.password.encode("utf8"), credentials[given.username].encode("utf8")):
            return
        raise Unauthorized()

    return check


class Unauthorized(AtelierError):
    status_code = 401
    headers = {"WWW-Authenticate": "Basic"}

    def __init__(self) -> None:
        super().__init__("Incorrect username or password", "Send HTTP Basic credentials listed in --api-auth.")
