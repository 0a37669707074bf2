"""API keys (`API_KEYS`) and the tenants they name.

Design record
- `API_KEYS` is comma-separated: `name=key` names the key's tenant; a bare key is a tenant of
  its own, `key-` and the first 12 hex digits of the key's SHA-256 (stable, not secret, and
  never the key). Several keys may name one tenant (to rotate a key); one key may not appear
  twice. Names are 1-64 of `A-Z a-z 0-9 . _ -` and may not start with `key-`.
- Keys are kept only as SHA-256 digests. A presented key is hashed and compared with *every*
  digest with `hmac.compare_digest`, without stopping at a match, so the time taken says
  nothing about which key matched or how much of one did.
- Nothing here logs, returns or formats a key; error messages name the position of a bad
  entry, never its text.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

MIN_KEY_LENGTH = 16
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_KEY = re.compile(r"[!-~]+")  # visible ASCII: what fits a header as is


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def bare_key_tenant(key: str) -> str:
    """The tenant id of a key given without a name."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class KeyRing:
    """The configured keys, as digests with their tenants."""

    entries: tuple[tuple[bytes, str], ...]

    @property
    def tenants(self) -> frozenset[str]:
        return frozenset(tenant for _, tenant in self.entries)

    def tenant_of(self, presented: str) -> str | None:
        """The tenant of this key, or None if it is not one of ours (constant time)."""
        digest = _digest(presented)
        found: str | None = None
        for stored, tenant in self.entries:
            if hmac.compare_digest(digest, stored):
                found = tenant
        return found


def parse_keys(text: str) -> KeyRing | None:
    """`API_KEYS` as a `KeyRing`; None when it is empty (no auth). `ValueError` naming the
    position of a bad entry."""
    entries: list[tuple[bytes, str]] = []
    seen: set[bytes] = set()
    for position, raw in enumerate(text.split(","), start=1):
        item = raw.strip()
        if not item:
            continue
        name, sep, key = item.partition("=")
        if not sep:
            name, key = "", item
        name, key = name.strip(), key.strip()
        if sep and not _NAME.fullmatch(name):
            raise ValueError(
                f"entry {position}: a tenant name is 1-64 letters, digits, '.', '_' or '-'"
            )
        if sep and name.startswith("key-"):
            raise ValueError(f"entry {position}: tenant names starting with 'key-' are reserved")
        if not _KEY.fullmatch(key) or len(key) < MIN_KEY_LENGTH:
            raise ValueError(
                f"entry {position}: a key is at least {MIN_KEY_LENGTH} visible ASCII characters"
                " (no spaces or commas)"
            )
        digest = _digest(key)
        if digest in seen:
            raise ValueError(f"entry {position}: the same key is listed twice")
        seen.add(digest)
        entries.append((digest, name if sep else bare_key_tenant(key)))
    return KeyRing(tuple(entries)) if entries else None
