"""Signed stream tokens: how a browser `EventSource`, which cannot send headers, reads a run.

Design record
- A token is `TENANT.EXPIRY.SIGNATURE`: the run's tenant, a Unix time in whole seconds, and
  HMAC-SHA256 (base64url, unpadded) over the run id, the tenant and the expiry. The run id is
  not in the token: it is the stream's path, so a token for one run fails on every other.
- It is accepted on `GET /runs/{run_id}/stream` only (app/auth/middleware.py), and grants
  nothing else: no status, no cancel, no other run.
- Expiry: the run's creation time + RUN_TIMEOUT_S (the longest a run can live) +
  STREAM_TOKEN_TTL_S, so `EventSource`'s own reconnects keep working for the run's whole life
  and the TTL after it. It is computed from the run's `created_at`, so a retried creation
  (the same Idempotency-Key) gets the same token.
- The secret is STREAM_TOKEN_SECRET, else a random one created once and kept in the store, so
  tokens outlive restarts. A tenant whose keys were all removed from API_KEYS is refused even
  with a token signed for it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import time
from datetime import datetime

SECRET_NAME = "stream_token"


def _sign(secret: bytes, run_id: str, tenant: str, expiry: int) -> bytes:
    message = f"{run_id}\n{tenant}\n{expiry}".encode()
    return hmac.new(secret, message, hashlib.sha256).digest()


class StreamTokens:
    def __init__(self, secret: bytes, lifetime_s: float) -> None:
        self._secret = secret
        self.lifetime_s = lifetime_s

    def issue(self, run_id: str, tenant: str, created_at: str) -> str:
        """The token for a run created at `created_at` (an ISO time, as run records hold)."""
        start = datetime.fromisoformat(created_at).timestamp()
        expiry = math.ceil(start + self.lifetime_s)
        signature = base64.urlsafe_b64encode(_sign(self._secret, run_id, tenant, expiry))
        return f"{tenant}.{expiry}.{signature.rstrip(b'=').decode()}"

    def verify(self, token: str, run_id: str, now: float | None = None) -> str | None:
        """The tenant the token was issued to for this run, or None: altered, for another run,
        expired or malformed."""
        tenant, _, rest = token.rpartition(".")
        tenant, _, expiry_text = tenant.rpartition(".")
        if not tenant or not expiry_text.isdigit() or len(expiry_text) > 12:
            return None
        try:
            given = base64.urlsafe_b64decode(rest + "=" * (-len(rest) % 4))
        except (binascii.Error, ValueError):
            return None
        expiry = int(expiry_text)
        if not hmac.compare_digest(given, _sign(self._secret, run_id, tenant, expiry)):
            return None
        if (time.time() if now is None else now) >= expiry:
            return None
        return tenant
