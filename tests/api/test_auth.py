"""API keys and tenants through the real server (`auth_server`: API_KEYS with tenants alice,
bob and a bare key): every route but the probes needs a key; another tenant's runs and threads
are 404 exactly as unknown ones; thread ids are per tenant; the default tenant's checkpoints
keep the client's thread ids."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ALICE_KEY, BARE_KEY, BOB_KEY
from tests.support.live import LiveServer, read_sse, stream_run, wait_status

SLOW = {"input": {"query": "[[tokens=400]] [[delay=0.02]] a slow answer"}}
ROUTES = [
    ("GET", "/graphs", None),
    ("GET", "/graphs/chat", None),
    ("POST", "/graphs/chat/stream", {"input": {"query": "hi"}}),
    ("POST", "/graphs/chat/runs", {"input": {"query": "hi"}}),
    ("GET", "/runs/{run}/stream", None),
    ("GET", "/runs/{run}", None),
    ("POST", "/runs/{run}/cancel", None),
    ("GET", "/threads/{thread}", None),
    ("GET", "/openapi.json", None),
    ("GET", "/no/such/path", None),
]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _client(server: LiveServer, headers: dict[str, str]) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30, headers=headers)


@pytest.fixture
def alice(auth_server: LiveServer) -> Iterator[httpx.Client]:
    with _client(auth_server, bearer(ALICE_KEY)) as c:
        yield c


@pytest.fixture
def bob(auth_server: LiveServer) -> Iterator[httpx.Client]:
    with _client(auth_server, {"X-Api-Key": BOB_KEY}) as c:
        yield c


@pytest.fixture
def anonymous(auth_server: LiveServer) -> Iterator[httpx.Client]:
    with _client(auth_server, {}) as c:
        yield c


@pytest.fixture(scope="module")
def alices_run(auth_server: LiveServer) -> dict[str, Any]:
    """A finished run of alice's on thread `alices-thread`."""
    with _client(auth_server, bearer(ALICE_KEY)) as c:
        body = {"input": {"query": "hi"}, "thread_id": "alices-thread"}
        run: dict[str, Any] = c.post("/graphs/chat/runs", json=body).json()
        wait_status(c, run["run_id"], "completed")
        return run


def _error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["error"]["code"] == code, body
    return body


def _unauthorized(response: httpx.Response) -> str:
    body = _error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"
    return str(body["error"]["message"])


def _send(
    client: httpx.Client, method: str, path: str, body: Any, run: dict[str, Any]
) -> httpx.Response:
    url = path.format(run=run["run_id"], thread=run["thread_id"])
    return client.request(method, url, json=body)


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_every_route_without_a_key_or_with_a_wrong_one_is_401(
    auth_server: LiveServer, alices_run: dict[str, Any], method: str, path: str, body: Any
) -> None:
    wrong = "not-a-key-of-ours-0123456789"
    for headers in ({}, bearer(wrong), {"X-Api-Key": wrong}, {"Authorization": "Basic abc"}):
        with _client(auth_server, headers) as c:
            message = _unauthorized(_send(c, method, path, body, alices_run))
            assert wrong not in message


def test_the_probes_need_no_key(anonymous: httpx.Client) -> None:
    assert anonymous.get("/healthz").status_code == 200
    assert anonymous.get("/readyz").status_code == 200


def test_a_key_works_as_bearer_or_x_api_key_and_names_one_tenant(
    auth_server: LiveServer, alices_run: dict[str, Any]
) -> None:
    run_id = alices_run["run_id"]
    with _client(auth_server, {"X-Api-Key": ALICE_KEY}) as by_header:
        assert by_header.get(f"/runs/{run_id}").json()["status"] == "completed"
    with _client(auth_server, {"authorization": f"bearer {ALICE_KEY}"}) as lower_case:
        assert lower_case.get(f"/runs/{run_id}").status_code == 200
    with _client(auth_server, bearer(BARE_KEY)) as bare:  # a bare key is a tenant of its own
        assert bare.get("/graphs").status_code == 200
        _error(bare.get(f"/runs/{run_id}"), 404, "run_not_found")
        events = stream_run(bare, "chat", {"input": {"query": "hi"}})
        assert events[-1].event == "end" and events[-1].data["status"] == "completed"


def test_another_tenants_run_is_404_exactly_as_an_unknown_one(
    alice: httpx.Client, bob: httpx.Client
) -> None:
    run = alice.post("/graphs/chat/runs", json=SLOW).json()
    run_id, unknown = run["run_id"], str(uuid.uuid4())
    try:
        for method, path in (
            ("GET", "/runs/{}"),
            ("GET", "/runs/{}/stream"),
            ("POST", "/runs/{}/cancel"),
        ):
            theirs = bob.request(method, path.format(run_id))
            none = bob.request(method, path.format(unknown))
            assert theirs.status_code == none.status_code == 404
            assert theirs.json() == {
                "error": {**none.json()["error"], "message": f"no run with id {run_id!r}"}
            }
        # bob's cancel did nothing: alice's run is still running, then ends on its own terms
        assert alice.get(f"/runs/{run_id}").json()["status"] == "running"
    finally:
        cancelled = alice.post(f"/runs/{run_id}/cancel")
    assert cancelled.json()["status"] == "cancelled"


def test_thread_ids_are_per_tenant(alice: httpx.Client, bob: httpx.Client) -> None:
    thread = f"shared-{uuid.uuid4().hex[:8]}"
    paused = stream_run(alice, "approval", {"input": {"request": "a haiku"}, "thread_id": thread})
    assert paused[-1].data["status"] == "paused"
    draft = alice.get(f"/threads/{thread}").json()["values"]["draft"]

    # bob sees no thread of that id: the same 404 as for one that never existed
    for thread_id in (thread, "never-used-by-anyone"):
        _error(bob.get(f"/threads/{thread_id}"), 404, "thread_not_found")
        resume = {"thread_id": thread_id, "resume": {"approved": True}}
        _error(bob.post("/graphs/approval/runs", json=resume), 404, "thread_not_found")
        _error(bob.post("/graphs/approval/stream", json=resume), 404, "thread_not_found")

    # bob's thread of the same id is his own: another graph, its own state
    done = stream_run(bob, "chat", {"input": {"query": "hi"}, "thread_id": thread})
    assert done[-1].data["status"] == "completed"
    bobs = bob.get(f"/threads/{thread}").json()
    assert bobs["graph"] == "chat" and "answer" in bobs["values"]

    alices = alice.get(f"/threads/{thread}").json()
    assert alices["graph"] == "approval" and alices["values"]["draft"] == draft
    assert alices["next"] == ["review"]
    resumed = stream_run(alice, "approval", {"thread_id": thread, "resume": {"approved": True}})
    assert resumed[-1].data["status"] == "completed"
    assert alice.get(f"/threads/{thread}").json()["values"]["approved"] is True


def test_a_busy_thread_of_one_tenant_does_not_block_the_same_id_of_another(
    alice: httpx.Client, bob: httpx.Client
) -> None:
    thread = f"busy-{uuid.uuid4().hex[:8]}"
    run = alice.post("/graphs/chat/runs", json={**SLOW, "thread_id": thread}).json()
    try:
        assert alice.get(f"/threads/{thread}").json()["active_run_id"] == run["run_id"]
        events = stream_run(bob, "chat", {"input": {"query": "hi"}, "thread_id": thread})
        assert events[-1].data["status"] == "completed"
        assert bob.get(f"/threads/{thread}").json()["active_run_id"] is None
    finally:
        alice.post(f"/runs/{run['run_id']}/cancel")


def _checkpoint_threads(server: LiveServer, thread: str) -> set[str]:
    db = Path(server.env["DATABASE_URL"].removeprefix("sqlite:///"))
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT DISTINCT thread_id FROM checkpoints WHERE thread_id LIKE ?", (f"%{thread}",)
        ).fetchall()
    return {row[0] for row in rows}


def test_the_default_tenant_keeps_the_clients_thread_ids_and_tenants_get_their_own(
    client: httpx.Client, server: LiveServer, alice: httpx.Client, auth_server: LiveServer
) -> None:
    """Without API keys the checkpointer's thread id is the client's, as before tenants, so
    databases written by earlier versions keep their threads; a tenant's is qualified."""
    thread = f"compat-{uuid.uuid4().hex[:8]}"
    stream_run(client, "chat", {"input": {"query": "hi"}, "thread_id": thread})
    assert _checkpoint_threads(server, thread) == {thread}
    stream_run(alice, "chat", {"input": {"query": "hi"}, "thread_id": thread})
    (qualified,) = _checkpoint_threads(auth_server, thread)
    assert qualified != thread and qualified.startswith("alice")


def test_a_thread_id_with_a_control_character_is_422(alice: httpx.Client) -> None:
    body = {"input": {"query": "hi"}, "thread_id": "alice\x1ft1"}
    _error(alice.post("/graphs/chat/runs", json=body), 422, "invalid_input")
    _error(alice.get("/threads/alice%1Ft1"), 422, "invalid_input")


def test_without_api_keys_every_request_is_served_and_the_log_warns(
    client: httpx.Client, server: LiveServer
) -> None:
    run = client.post("/graphs/chat/runs", json={"input": {"query": "hi"}}).json()
    assert "?" not in run["stream_url"]  # no token without keys: today's URLs
    with client.stream("GET", run["stream_url"]) as response:
        assert read_sse(response)[-1].event == "end"
    assert "auth: OFF (API_KEYS is not set)" in server.logs()
