"""`X-Forwarded-Proto`, `-Host` and `-Prefix` from trusted proxies, so the URLs the API returns
(`stream_url`, `cancel_url`) point at the proxy, not at the backend behind it.

Design record
- Trust is per connection: only a peer in `FORWARDED_ALLOW_IPS` (addresses, networks, or `*`)
  may set these headers; from anyone else they are ignored, never an error.
- uvicorn's own proxy-headers middleware (on by default, reading the same
  `FORWARDED_ALLOW_IPS` from the environment) runs before the app and already applies
  `X-Forwarded-Proto` and `X-Forwarded-For`. Applying it again here is harmless, and it makes
  the setting work where uvicorn's does not (another server, a value only in `.env`).
- uvicorn replaces the client address with the one from `X-Forwarded-For`, so the peer is no
  longer visible here. That address always has port 0 (nginx sends none), which a TCP peer
  never has: a request with port 0 and `X-Forwarded-For` is one whose peer uvicorn has judged
  trusted. tests/api/test_forwarded.py pins this; if uvicorn ever keeps a port, those requests
  fall back to being judged by their address (the prefix and host are then ignored, never
  wrongly trusted).
- `X-Forwarded-Prefix` replaces the ASGI `root_path` (uvicorn's `--root-path`): the proxy
  knows the public path, as Werkzeug's ProxyFix assumes. The path keeps the ASGI convention
  that it starts with `root_path`.
- With several proxies, each header's first value is the client-facing one. A value that is
  not a plain host, an `http(s)` scheme or a path is ignored.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

Scope = dict[str, Any]
_HOST = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$"
)
_PREFIX = re.compile(r"^(?:/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)+/?$")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_trusted(value: str) -> tuple[bool, tuple[Network, ...]]:
    """`FORWARDED_ALLOW_IPS`: comma-separated addresses or networks, or `*` (everyone). Raises
    ValueError naming a bad entry."""
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    if "*" in entries:
        return True, ()
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network (or *)") from None
    return False, tuple(networks)


class ForwardedMiddleware:
    def __init__(self, app: Any, trusted: str) -> None:
        self.app = app
        self._everyone, self._networks = parse_trusted(trusted)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and self._trusts(scope):
            scope = _apply(scope)
        await self.app(scope, receive, send)

    def _trusts(self, scope: Scope) -> bool:
        if self._everyone:
            return True
        client = scope.get("client")
        if not client:
            return False
        host, port = client
        if port == 0 and any(name == b"x-forwarded-for" for name, _ in scope["headers"]):
            return True  # uvicorn trusted the peer and put X-Forwarded-For's address here
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self._networks)


def _first(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1").split(",")[0].strip()
    return None


def _apply(scope: Scope) -> Scope:
    headers: list[tuple[bytes, bytes]] = list(scope["headers"])
    scope = dict(scope)
    proto = _first(headers, b"x-forwarded-proto")
    if proto in ("http", "https"):
        scope["scheme"] = proto if scope["type"] == "http" else proto.replace("http", "ws")
    host = _first(headers, b"x-forwarded-host")
    if host is not None and _HOST.match(host):
        headers = [(k, v) for k, v in headers if k != b"host"] + [(b"host", host.encode())]
        scope["headers"] = headers
    prefix = _first(headers, b"x-forwarded-prefix")
    if prefix is not None and _PREFIX.match(prefix):
        prefix = prefix.rstrip("/")
        root = scope.get("root_path", "")
        path: str = scope["path"]
        route = path[len(root) :] if root and path.startswith(root) else path
        scope["root_path"] = prefix
        scope["path"] = prefix + route
        raw: bytes | None = scope.get("raw_path")
        if raw is not None:
            raw_root = root.encode()
            raw_route = raw[len(raw_root) :] if raw_root and raw.startswith(raw_root) else raw
            scope["raw_path"] = prefix.encode() + raw_route
    return scope
