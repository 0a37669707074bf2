"""Tenants: whose a run or a thread is. The engine knows a tenant by its id, a plain string set
by whoever authenticated the request; it knows nothing of keys or HTTP.

Design record
- Runs carry their tenant (`RunRecord.tenant`); a lookup by another tenant is `NotFound`,
  exactly as for an id that does not exist, so ids of other tenants cannot be probed.
- Thread ids are the client's choice, so they are per tenant: two tenants may both use `t1`.
  The checkpointer sees a tenant-qualified id (`checkpoint_thread`), never shown to a client.
  The default tenant's is the client's id unchanged, so databases written before tenants
  existed keep their threads.
- A qualified id is `TENANT + "\\x1f" + THREAD`. It cannot collide with the default tenant's ids
  or another tenant's because no thread id may hold a control character (`check_thread_id`)
  and no tenant id holds one either (app/auth/keys.py checks the names).
"""

from __future__ import annotations

from app.engine.errors import InvalidInput

DEFAULT_TENANT = "default"
"""The tenant of every request when the server has no API keys."""

SEPARATOR = "\x1f"


def check_thread_id(thread_id: str) -> str:
    """The thread id as given, or `invalid_input`: no control characters (they would make a
    qualified id ambiguous, and have no business in an id anyway)."""
    if any(ch < " " or ch == "\x7f" for ch in thread_id):
        raise InvalidInput("thread_id: must not contain control characters")
    return thread_id


def checkpoint_thread(tenant: str, thread_id: str) -> str:
    """The id the checkpointer keeps the tenant's thread under."""
    check_thread_id(thread_id)
    if tenant == DEFAULT_TENANT:
        return thread_id
    return f"{tenant}{SEPARATOR}{thread_id}"
