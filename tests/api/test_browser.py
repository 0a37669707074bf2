"""A real Chromium (Debian's `chromium`, driven by Playwright; never a downloaded browser) against
the real server: the README's `watchRun` snippet sees a failing run's `error` then `end` and
closes; a client that closes on `onerror` misses the `end`.

The claim checked: an SSE event named `error` is dispatched as a MessageEvent of type "error",
so it calls `EventSource.onerror` just like a dropped connection."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page

from tests.support.live import LiveServer
from tests.support.readme import readme_block

FAILING = {"input": {"query": "[[fail=500]] this run fails"}}


@pytest.fixture
def page(browser: Browser, server: LiveServer) -> Iterator[Page]:
    page = browser.new_page()
    page.goto(f"{server.url}/healthz")  # same origin as the streams
    # Keep every EventSource the page makes, to see whether the snippet closed it.
    page.add_script_tag(
        content="""window.sources = [];
        window.EventSource = class extends EventSource {
            constructor(...args) { super(...args); window.sources.push(this); }
        };"""
    )
    page.add_script_tag(content=readme_block("Clients: browsers and Python", "js"))
    yield page
    page.close()


def _failing_run(client: httpx.Client) -> str:
    response = client.post("/graphs/chat/runs", json=FAILING)
    assert response.status_code == 202, response.text
    stream_url: str = response.json()["stream_url"]
    return stream_url


def test_the_readme_snippet_sees_error_then_end_and_closes(
    page: Page, client: httpx.Client
) -> None:
    url = _failing_run(client)
    result: dict[str, Any] = page.evaluate(
        """async (url) => {
            const seen = [];
            const end = await watchRun(url, (type, data) => seen.push([type, data]));
            return {seen, end, states: window.sources.map((s) => s.readyState)};
        }""",
        url,
    )
    types = [event for event, _ in result["seen"]]
    assert types[0] == "metadata"
    assert types[-2:] == ["error", "end"]
    assert result["seen"][-2][1]["code"] == "upstream_error"
    assert result["end"]["status"] == "failed"
    # closed on `end` (EventSource.CLOSED), so the browser will not reconnect
    assert result["states"] == [2]


def test_onerror_fires_for_the_error_event_so_closing_there_misses_end(
    page: Page, client: httpx.Client
) -> None:
    url = _failing_run(client)
    result: list[str] = page.evaluate(
        """(url) => new Promise((resolve) => {
            const source = new EventSource(url);
            const seen = [];
            source.addEventListener("end", () => seen.push("end"));
            source.onerror = (e) => {
                seen.push(e instanceof MessageEvent ? "onerror:" + e.data : "onerror:connection");
                source.close();  // the naive client
                resolve(seen);
            };
        })""",
        url,
    )
    assert len(result) == 1 and result[0].startswith("onerror:{")
    assert '"code":"upstream_error"' in result[0]
