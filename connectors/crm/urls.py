"""CRM addresses: which may be plain HTTP (this machine only), and how to name them."""

from __future__ import annotations

from urllib.parse import urlsplit

# The only hosts a CRM address may reach over plain HTTP: the bundled sandbox.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_loopback(url: str) -> bool:
    """Whether `url` is plain HTTP to this machine (the sandbox), never a real org."""
    parts = urlsplit(url)
    return parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS


def host_of(url: str | None) -> str:
    """`url`'s host and port, for messages: never its user part or query."""
    parts = urlsplit(url or "")
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname
    if not host:
        return "an unnamed host"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}" if port else host
