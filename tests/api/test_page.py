"""The live page (`GET /`) in a real Chromium (Debian's `chromium`, driven by Playwright; never a
downloaded browser) against the real server, driven only through its test ids (API.md): the
answer grows token by token, Stop ends a run, Approve and Revise resume a paused `approval` run,
a reload re-attaches to the same run and loses nothing, and with API keys the key is typed once
and never put in a URL. The page's text is compared with the run's own events, replayed from
`GET /runs/{id}/stream`."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Request, expect

from tests.conftest import ALICE_KEY
from tests.support.live import LiveServer

SCREENSHOT = Path(__file__).parents[2] / "docs" / "screenshot-agent.png"


@pytest.fixture
def tab(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    yield page
    context.close()


def _open(tab: Page, server: LiveServer) -> None:
    tab.goto(f"{server.url}/")
    expect(tab.get_by_test_id("graph-select").locator("option")).not_to_have_count(0)


def _run(tab: Page, graph: str, **fields: str) -> None:
    tab.get_by_test_id("graph-select").select_option(graph)
    for name, value in fields.items():
        tab.get_by_test_id(f"field-{name}").fill(value)
    tab.get_by_test_id("run").click()


def _watched(tab: Page) -> dict[str, Any]:
    """The run the page is watching, as it keeps it in sessionStorage."""
    saved: dict[str, Any] = json.loads(tab.evaluate("sessionStorage.getItem('lgstream.run')"))
    return saved


def _stored_text(server: LiveServer, run_id: str, key: str | None = None) -> str:
    """The run's answer from its own log: every token's text, replayed from the start."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    text, event = [], ""
    with httpx.stream(
        "GET", f"{server.url}/runs/{run_id}/stream", headers=headers, timeout=30
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: ") and event == "token":
                text.append(json.loads(line[len("data: ") :])["text"])
    return "".join(text)


def test_the_answer_grows_token_by_token_before_the_end(tab: Page, server: LiveServer) -> None:
    _open(tab, server)
    _run(tab, "chat", query="[[tokens=20]] [[delay=0.05]] grow")
    answer, status = tab.get_by_test_id("answer"), tab.get_by_test_id("status")
    seen: list[str] = []
    while True:
        tab.wait_for_function(
            """(n) => document.querySelector('[data-testid=answer]').textContent.length > n
                || /completed|failed/.test(document.querySelector('[data-testid=status]')
                                           .textContent)""",
            arg=len(seen[-1]) if seen else 0,
        )
        text, ended = answer.text_content() or "", "completed" in (status.text_content() or "")
        if ended:
            break
        seen.append(text)
    assert len(seen) >= 3, seen
    assert all(b.startswith(a) and len(b) > len(a) for a, b in itertools.pairwise(seen))
    expect(status).to_contain_text("completed")
    assert answer.text_content() == _stored_text(server, _watched(tab)["run_id"])


def test_stop_ends_a_slow_run_within_a_second_and_nothing_more_arrives(
    tab: Page, server: LiveServer
) -> None:
    _open(tab, server)
    _run(tab, "chat", query="[[tokens=400]] [[delay=0.05]] a slow one")
    answer, status = tab.get_by_test_id("answer"), tab.get_by_test_id("status")
    expect(answer).not_to_have_text("")
    expect(tab.get_by_test_id("stop")).to_be_enabled()
    started = time.monotonic()
    tab.get_by_test_id("stop").click()
    expect(status).to_contain_text("cancelled", timeout=1000)
    assert time.monotonic() - started < 1.0
    run_id = _watched(tab)["run_id"]
    record = httpx.get(f"{server.url}/runs/{run_id}").json()
    assert record["status"] == "cancelled"
    # the run has ended on the server: what the page shows is all of it, and stays so
    shown = answer.text_content()
    assert shown == _stored_text(server, run_id)
    assert len(shown or "") < len(" ".join(["tok"] * 400))
    expect(tab.get_by_test_id("stop")).to_be_disabled()
    expect(tab.get_by_test_id("run")).to_be_enabled()


def test_a_failed_run_shows_failed_with_its_code(tab: Page, server: LiveServer) -> None:
    _open(tab, server)
    _run(tab, "chat", query="[[fail=500]] this fails")
    expect(tab.get_by_test_id("status")).to_contain_text("failed (upstream_error)")
    expect(tab.get_by_test_id("timeline")).to_contain_text("error upstream_error")


def test_approve_completes_a_paused_approval_run(tab: Page, offline_server: LiveServer) -> None:
    _open(tab, offline_server)
    _run(tab, "approval", request="a haiku about rivers")
    status = tab.get_by_test_id("status")
    expect(status).to_contain_text("paused")
    draft = tab.get_by_test_id("answer").text_content() or ""
    assert "a haiku about rivers" in draft
    expect(tab.locator("#interrupt")).to_contain_text(draft.strip()[:40])
    tab.get_by_test_id("approve").click()
    expect(status).to_contain_text("completed")
    expect(tab.get_by_test_id("approve")).to_be_hidden()
    thread = httpx.get(f"{offline_server.url}/threads/{_watched(tab)['thread_id']}").json()
    assert thread["values"]["approved"] is True
    assert thread["values"]["final"] == thread["values"]["draft"]


def test_revise_redrafts_with_the_feedback_and_asks_again(
    tab: Page, offline_server: LiveServer
) -> None:
    _open(tab, offline_server)
    _run(tab, "approval", request="a limerick")
    status = tab.get_by_test_id("status")
    expect(status).to_contain_text("paused")
    first = _watched(tab)
    tab.get_by_test_id("feedback").fill("make it about cats")
    tab.get_by_test_id("revise").click()
    expect(tab.get_by_test_id("answer")).to_contain_text("make it about cats")
    expect(status).to_contain_text("paused")
    second = _watched(tab)
    assert second["run_id"] != first["run_id"]
    assert second["thread_id"] == first["thread_id"]
    assert tab.get_by_test_id("answer").text_content() == _stored_text(
        offline_server, second["run_id"]
    )
    thread = httpx.get(f"{offline_server.url}/threads/{second['thread_id']}").json()
    assert "make it about cats" in thread["values"]["draft"]


def test_a_reload_mid_run_reattaches_and_the_final_text_is_exact(
    tab: Page, server: LiveServer
) -> None:
    _open(tab, server)
    _run(tab, "chat", query="[[tokens=60]] [[delay=0.03]] reload me")
    expect(tab.get_by_test_id("answer")).not_to_have_text("")
    before = _watched(tab)["run_id"]
    streams: list[str] = []
    tab.on("request", lambda r: streams.append(r.url) if "/stream" in r.url else None)
    tab.reload()
    status = tab.get_by_test_id("status")
    expect(status).to_contain_text("completed", timeout=10_000)
    assert _watched(tab)["run_id"] == before
    # re-attached after what it had, not from the start
    assert len(streams) == 1 and "last_event_id=" in streams[0], streams
    assert tab.get_by_test_id("answer").text_content() == _stored_text(server, before)


def test_with_a_key_it_is_typed_once_sent_as_a_header_and_never_in_a_url(
    tab: Page, auth_server: LiveServer
) -> None:
    for path in ("/", "/page/page.js", "/page/page.css"):
        assert httpx.get(f"{auth_server.url}{path}").status_code == 200, path
    assert httpx.get(f"{auth_server.url}/graphs").status_code == 401
    requests: list[Request] = []
    tab.on("request", lambda r: requests.append(r))
    tab.goto(f"{auth_server.url}/")
    expect(tab.get_by_test_id("status")).to_contain_text("unauthorized")
    tab.get_by_test_id("api-key").fill(ALICE_KEY)
    expect(tab.get_by_test_id("graph-select").locator("option")).not_to_have_count(0)
    tab.reload()  # kept for the tab: no second typing
    expect(tab.get_by_test_id("graph-select").locator("option")).not_to_have_count(0)
    _run(tab, "chat", query="[[tokens=5]] keyed")
    expect(tab.get_by_test_id("status")).to_contain_text("completed")
    run_id = _watched(tab)["run_id"]
    assert tab.get_by_test_id("answer").text_content() == _stored_text(
        auth_server, run_id, ALICE_KEY
    )
    assert all(ALICE_KEY not in r.url for r in requests)
    streams = [r for r in requests if "/stream" in r.url]
    assert streams and all("token=" in r.url for r in streams)
    api_calls = [r for r in requests if r.resource_type == "fetch"]
    assert {r.url.split("?")[0].removeprefix(auth_server.url) for r in api_calls} >= {
        "/graphs",
        "/graphs/chat/runs",
    }
    assert all(r.headers.get("authorization") == f"Bearer {ALICE_KEY}" for r in api_calls[1:])


def test_a_finished_agent_run_shows_its_tool_call_and_answer(
    tab: Page, offline_server: LiveServer, tmp_path: Path
) -> None:
    _open(tab, offline_server)
    _run(tab, "agent", messages="What is 6 * 7?")
    expect(tab.get_by_test_id("status")).to_contain_text("completed")
    timeline = tab.get_by_test_id("timeline")
    expect(timeline).to_contain_text("tool calculator")
    expect(timeline).to_contain_text("output")
    expect(timeline).to_contain_text("end: completed")
    expect(tab.get_by_test_id("answer")).to_contain_text("42")
    tab.screenshot(path=tmp_path / "screenshot-agent.png", full_page=True)
    assert (tmp_path / "screenshot-agent.png").stat().st_size > 0


def test_a_report_run_shows_its_custom_progress_events(
    tab: Page, offline_server: LiveServer
) -> None:
    _open(tab, offline_server)
    _run(tab, "report", topic="rivers")
    expect(tab.get_by_test_id("status")).to_contain_text("completed")
    timeline = tab.get_by_test_id("timeline")
    expect(timeline.locator("li.custom").first).to_be_visible()
    expect(timeline).to_contain_text("update from")
    assert tab.get_by_test_id("answer").text_content() == _stored_text(
        offline_server, _watched(tab)["run_id"]
    )
