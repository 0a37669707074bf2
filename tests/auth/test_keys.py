"""`API_KEYS` parsing (app/auth/keys.py): tenants named or derived, bad entries refused by
position without showing the key, lookups by key."""

from __future__ import annotations

import pytest

from app.auth.keys import bare_key_tenant, parse_keys

A = "alice-key-0123456789abcdef"
B = "bob-key-0123456789abcdef00"
C = "bare-key-0123456789abcdef0"


def test_named_and_bare_keys_name_their_tenants() -> None:
    ring = parse_keys(f" alice={A} , {C},bob={B},")
    assert ring is not None
    assert ring.tenant_of(A) == "alice" and ring.tenant_of(B) == "bob"
    assert ring.tenant_of(C) == bare_key_tenant(C)
    assert ring.tenant_of("alice") is None and ring.tenant_of(A + "x") is None
    assert ring.tenants == {"alice", "bob", bare_key_tenant(C)}


def test_a_bare_keys_tenant_is_stable_and_does_not_show_the_key() -> None:
    tenant = bare_key_tenant(C)
    assert tenant == bare_key_tenant(C) and tenant.startswith("key-") and len(tenant) == 16
    assert C not in tenant and C[:8] not in tenant


def test_several_keys_may_name_one_tenant_to_rotate_a_key() -> None:
    ring = parse_keys(f"alice={A},alice={B}")
    assert ring is not None and ring.tenant_of(A) == ring.tenant_of(B) == "alice"


def test_no_keys_is_no_auth() -> None:
    assert parse_keys("") is None and parse_keys(" , ") is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("short-key", "entry 1: a key is at least 16"),
        (f"{A},alice=has space in it 0123", "entry 2: a key is at least 16"),
        (f"{A},{A}", "entry 2: the same key is listed twice"),
        (f"al ice={A}", "entry 1: a tenant name"),
        (f"key-x={A}", "entry 1: tenant names starting with 'key-' are reserved"),
        (f"a\x1fb={A}", "entry 1: a tenant name"),
    ],
)
def test_a_bad_entry_is_refused_by_position_without_showing_it(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=r"^entry ") as caught:
        parse_keys(text)
    assert str(caught.value).startswith(problem)
    assert A not in str(caught.value) and "short-key" not in str(caught.value)
