"""CORS through the real server (`auth_server`: API keys, `CORS_ORIGINS` = one page origin):
preflights for every route need no key; the headers clients send are allowed and the ones they
read exposed; and from a real page in Chromium (Debian's `chromium`, driven by Playwright) on
another origin, `fetch` with a key starts a run and `EventSource` on its `stream_url` streams it
to `end`, while a page from an origin not on the list is refused."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser

from tests.conftest import ALICE_KEY
from tests.support.live import LiveServer

PATHS = [
    ("POST", "/graphs/chat/runs"),
    ("POST", "/graphs/chat/stream"),
    ("GET", "/graphs"),
    ("GET", "/runs/some-run/stream"),
    ("GET", "/runs/some-run"),
    ("POST", "/runs/some-run/cancel"),
    ("GET", "/threads/t1"),
]
SENT = "authorization,x-api-key,content-type,last-event-id,idempotency-key"
EXPOSED = {
    "location",
    "content-location",
    "retry-after",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
}


def _preflight(server: LiveServer, origin: str, method: str, path: str) -> httpx.Response:
    return httpx.options(
        f"{server.url}{path}",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": SENT,
        },
    )


@pytest.mark.parametrize(("method", "path"), PATHS)
def test_a_preflight_from_an_allowed_origin_needs_no_key(
    auth_server: LiveServer, page_origins: tuple[str, str], method: str, path: str
) -> None:
    allowed, _ = page_origins
    response = _preflight(auth_server, allowed, method, path)
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == allowed
    assert method in response.headers["access-control-allow-methods"]
    granted = {
        h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")
    }
    assert set(SENT.split(",")) <= granted


def test_a_preflight_from_another_origin_is_refused(
    auth_server: LiveServer, page_origins: tuple[str, str]
) -> None:
    _, refused = page_origins
    response = _preflight(auth_server, refused, "POST", "/graphs/chat/runs")
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


def test_responses_expose_the_headers_clients_read_even_a_401(
    auth_server: LiveServer, page_origins: tuple[str, str]
) -> None:
    allowed, _ = page_origins
    for headers in ({}, {"X-Api-Key": ALICE_KEY}):
        response = httpx.get(f"{auth_server.url}/graphs", headers={"Origin": allowed, **headers})
        assert response.headers["access-control-allow-origin"] == allowed
        exposed = {
            h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")
        }
        assert exposed == EXPOSED
    assert response.status_code == 200


START_AND_WATCH = """async ([api, key]) => {
    const response = await fetch(api + "/graphs/chat/runs", {
        method: "POST",
        headers: {"Authorization": "Bearer " + key, "Content-Type": "application/json",
                  "Idempotency-Key": "browser-" + Math.random()},
        body: JSON.stringify({input: {query: "hi from another origin"}}),
    });
    const run = await response.json();
    const events = await new Promise((resolve, reject) => {
        const seen = [];
        const source = new EventSource(run.stream_url);
        for (const type of ["metadata", "token", "end"]) {
            source.addEventListener(type, (e) => {
                seen.push([type, JSON.parse(e.data)]);
                if (type === "end") { source.close(); resolve(seen); }
            });
        }
        source.onerror = () => {
            if (source.readyState === EventSource.CLOSED) reject(new Error("refused"));
        };
    });
    return {status: response.status, run, events};
}"""


def test_a_page_on_an_allowed_origin_starts_a_run_and_streams_it_with_event_source(
    browser: Browser, auth_server: LiveServer, page_origins: tuple[str, str]
) -> None:
    allowed, _ = page_origins
    page = browser.new_page()
    try:
        page.goto(f"{allowed}/")
        result: dict[str, Any] = page.evaluate(START_AND_WATCH, [auth_server.url, ALICE_KEY])
    finally:
        page.close()
    assert result["status"] == 202
    assert "token=" in result["run"]["stream_url"] and ALICE_KEY not in result["run"]["stream_url"]
    types = [event for event, _ in result["events"]]
    assert types[0] == "metadata" and "token" in types
    assert result["events"][-1] == ["end", result["events"][-1][1]]
    assert result["events"][-1][1]["status"] == "completed"


def test_a_page_on_an_origin_not_on_the_list_is_refused(
    browser: Browser, auth_server: LiveServer, page_origins: tuple[str, str]
) -> None:
    _, refused = page_origins
    page = browser.new_page()
    try:
        page.goto(f"{refused}/")
        outcome: str = page.evaluate(
            """async ([api, key]) => {
                try {
                    await fetch(api + "/graphs/chat/runs", {
                        method: "POST",
                        headers: {"Authorization": "Bearer " + key,
                                  "Content-Type": "application/json"},
                        body: JSON.stringify({input: {query: "hi"}}),
                    });
                    return "allowed";
                } catch (e) {
                    return "refused: " + e.name;
                }
            }""",
            [auth_server.url, ALICE_KEY],
        )
    finally:
        page.close()
    assert outcome == "refused: TypeError"
