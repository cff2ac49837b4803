"""A1111's credential flag format, `user:pass,user2:pass2` (--gradio-auth, --gradio-auth-path, --api-auth)."""

from __future__ import annotations


def parse_credentials(text: str | None) -> list[tuple[str, str]]:
    """(user, password) pairs; entries may also be separated by newlines. Malformed entries raise ValueError."""
    pairs = []
    for item in (text or "").replace("\n", ",").split(","):
        item = item.strip()
        if not item:
            continue
        user, sep, password = item.partition(":")
        if not sep or not user:
            raise ValueError(f"credentials must look like user:password, got {item!r}")
        pairs.append((user, password))
    return pairs
