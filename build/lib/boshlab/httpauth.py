"""HTTP basic auth as a plain header (works the same on every aiohttp version)."""
from __future__ import annotations

import base64
from urllib.parse import quote, urlsplit, urlunsplit


def basic_auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (for logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, f"{parts.username}:***@{host}", parts.path, parts.query, parts.fragment))


def with_userinfo(url: str, user: str, password: str) -> str:
    """``scheme://[old@]host:port/path`` -> ``scheme://user:password@host:port/path`` (both percent-encoded)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, f"{quote(user, safe='')}:{quote(password, safe='')}@{host}", parts.path,
                       parts.query, ""))
