"""Input images given as http(s) URLs (A1111's ``api_enable_requests`` / ``api_forbid_local_requests`` settings).

A server that fetches any URL it is sent can be used to reach machines behind it, so by default only hosts whose
every address is a global one are fetched, redirects are followed by hand (each hop checked the same way), and the
download is cut off at a size limit and a timeout. Every failure is a 422 saying why.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urljoin, urlsplit

import requests

from modules.errors import InvalidRequest

TIMEOUT_S = 10
MAX_BYTES = 50 * 1024 * 1024
MAX_REDIRECTS = 3
_HINT = "Send the image itself, base64-encoded, or a public http(s) URL."


def is_url(text: object) -> bool:
    return isinstance(text, str) and text.startswith(("http://", "https://"))


def host_addresses(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address ``host`` resolves to (a literal address is itself)."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as e:
        raise InvalidRequest(f"The host {host!r} could not be resolved ({e}).", _HINT) from e
    return [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]


def check_url(url: str, forbid_local: bool, what: str) -> None:
    """Refuse non-http(s) URLs and, with ``forbid_local``, hosts that resolve to any non-global address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(f"The {what} URL {url!r} is not an http(s) URL.", _HINT)
    if not forbid_local:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    local = [str(a) for a in host_addresses(parts.hostname, port) if not a.is_global]
    if local:
        raise InvalidRequest(f"The {what} URL points to a local or private address ({', '.join(local)}); "
                             "fetching it is refused because the api_forbid_local_requests setting is on.",
                             "Use a public URL, send the image as base64, or turn off api_forbid_local_requests "
                             "in the server's settings (not possible through the API).")


def fetch_image_bytes(url: str, *, forbid_local: bool = True, what: str = "image", timeout: float = TIMEOUT_S,
                      max_bytes: int = MAX_BYTES) -> bytes:
    """The body of ``url`` (at most ``max_bytes``), following up to 3 redirects, each one checked like the first."""
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        check_url(current, forbid_local, what)
        try:
            with requests.get(current, timeout=timeout, stream=True, allow_redirects=False,
                              headers={"User-Agent": "Atelier"}) as response:
                if response.is_redirect and "location" in response.headers:
                    current = urljoin(current, response.headers["location"])
                    continue
                if response.status_code != 200:
                    raise InvalidRequest(f"Fetching the {what} URL answered HTTP {response.status_code}.", _HINT)
                return _read_capped(response, max_bytes, what)
        except requests.RequestException as e:
            raise InvalidRequest(f"The {what} URL could not be fetched: {type(e).__name__}: {e}", _HINT) from e
    raise InvalidRequest(f"The {what} URL redirected more than {MAX_REDIRECTS} times.", _HINT)


def _read_capped(response: requests.Response, max_bytes: int, what: str) -> bytes:
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise InvalidRequest(f"The {what} at the URL is {int(declared)} bytes; the limit is {max_bytes}.", _HINT)
    chunks, total = [], 0
    for chunk in response.iter_content(chunk_size=1 << 16):
        total += len(chunk)
        if total > max_bytes:
            raise InvalidRequest(f"The {what} at the URL is larger than the {max_bytes}-byte limit.", _HINT)
        chunks.append(chunk)
    return b"".join(chunks)
