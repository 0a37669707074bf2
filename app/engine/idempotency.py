"""Idempotency keys: a retried run creation gets the run the first request created.

Design record
- A key is bound per tenant: `(tenant, key) -> run_id`, with a fingerprint of the request that
  created the run (app/engine/tenancy.py: without API keys every request is `DEFAULT_TENANT`).
- A binding lasts `KEY_TTL_S` (24 h) from its creation. The same key with the same
  fingerprint within that time is the same run; with another fingerprint it is
  `409 idempotency_mismatch`. After it, the key starts a new run (and is bound to it).
- Bindings live in the `RunStore`, so a retry after a restart still finds its run. A binding
  whose run is gone (retention shorter than 24 h, or a start that failed after binding) is
  treated as absent.
- A request that fails before its run starts (a bad body, a busy thread) binds nothing, so
  its retry is judged afresh.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from app.engine.errors import InvalidInput
from app.engine.tenancy import DEFAULT_TENANT

__all__ = ["DEFAULT_TENANT", "IdempotencyKey", "KeyBinding", "check_key", "fingerprint"]
KEY_TTL_S = 24 * 3600.0
MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class IdempotencyKey:
    """A request's key, for its tenant, with the fingerprint of what it asks for."""

    tenant: str
    key: str
    fingerprint: str


@dataclass(frozen=True)
class KeyBinding:
    """A key bound to the run it created; `created_at` is an ISO time, as run records use."""

    tenant: str
    key: str
    fingerprint: str
    run_id: str
    created_at: str


def check_key(value: str) -> str:
    """The key as given, or `422 invalid_idempotency_key`: 1 to 255 visible ASCII characters
    (what fits a header, a log line and an index without surprises)."""
    if not 1 <= len(value) <= MAX_KEY_LENGTH:
        raise InvalidInput(
            f"Idempotency-Key: must be 1 to {MAX_KEY_LENGTH} characters (got {len(value)})",
            code="invalid_idempotency_key",
        )
    if not all("!" <= ch <= "~" for ch in value):
        raise InvalidInput(
            "Idempotency-Key: only visible ASCII characters, no spaces",
            code="invalid_idempotency_key",
        )
    return value


def fingerprint(*parts: Any) -> str:
    """A stable digest of JSON-able parts (key order does not matter)."""
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()
