"""The `RateLimit-*` headers of run creation (IETF httpapi draft, delta-seconds reset)."""

from __future__ import annotations

import math

from app.auth.throttle import Quota

RATE_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")


def rate_headers(quota: Quota | None) -> dict[str, str]:
    """The headers for a key's window; none when runs are not rate limited."""
    if quota is None:
        return {}
    return {
        "RateLimit-Limit": str(quota.limit),
        "RateLimit-Remaining": str(quota.remaining),
        "RateLimit-Reset": str(math.ceil(quota.reset_s)),
    }
