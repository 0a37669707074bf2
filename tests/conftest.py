"""Shared fixtures: the fake OpenAI server and live service processes (real uvicorn)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.support.fake_openai import FakeOpenAI
from tests.support.live import LiveServer
from tests.support.pages import PageServer


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(tokens=20).start()
    yield server
    server.stop()


def _fake_upstream(fake: FakeOpenAI, **settings: str) -> dict[str, str]:
    """The environment of a service whose ChatOpenAI talks to the fake, plus `settings`."""
    return {
        "OPENAI_API_KEY": "test-key",
        "OPENAI_BASE_URL": fake.base_url,
        "LLM_MAX_RETRIES": "0",
        **settings,
    }


def _serve(tmp: Path, env: dict[str, str]) -> Iterator[LiveServer]:
    server = LiveServer(tmp, env).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def server(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The service with `ChatOpenAI` pointed at the fake upstream."""
    yield from _serve(
        tmp_path_factory.mktemp("server"),
        _fake_upstream(fake, LLM_MODEL="fake-model", MAX_CONCURRENT_RUNS="200"),
    )


@pytest.fixture
def own_server(fake: FakeOpenAI, tmp_path: Path) -> Iterator[LiveServer]:
    """A service of the test's own, set up as `server`: for a test that measures RSS growth,
    which memory freed by earlier tests in a shared process would partly absorb (a big event
    sent whole to 30 stalled readers grew a fresh process by 69 MB, the shared one by 40 MB)."""
    yield from _serve(
        tmp_path, _fake_upstream(fake, LLM_MODEL="fake-model", MAX_CONCURRENT_RUNS="200")
    )


@pytest.fixture(scope="session")
def tight(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Small limits: two concurrent runs, a one-second send timeout."""
    yield from _serve(
        tmp_path_factory.mktemp("tight"),
        _fake_upstream(fake, MAX_CONCURRENT_RUNS="2", SEND_TIMEOUT_S="1", PING_INTERVAL_S="0.2"),
    )


@pytest.fixture(scope="session")
def offline_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The service with no key: the built-in offline model."""
    yield from _serve(tmp_path_factory.mktemp("offline"), {})


# API keys of `auth_server`: two named tenants and a bare key (its own tenant).
ALICE_KEY = "alice-key-0123456789abcdef"
BOB_KEY = "bob-key-0123456789abcdef00"
BARE_KEY = "bare-key-0123456789abcdef0"
AUTH_KEYS = f"alice={ALICE_KEY},bob={BOB_KEY},{BARE_KEY}"


@pytest.fixture(scope="session")
def page_origins() -> Iterator[tuple[str, str]]:
    """Two web servers serving a blank page: the origin `auth_server` allows, and one it
    does not (for the browser tests of CORS)."""
    allowed, refused = PageServer().start(), PageServer().start()
    yield allowed.origin, refused.origin
    allowed.stop()
    refused.stop()


@pytest.fixture(scope="session")
def auth_server(
    fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory, page_origins: tuple[str, str]
) -> Iterator[LiveServer]:
    """The service with API keys (`AUTH_KEYS`) and CORS for `page_origins[0]`."""
    yield from _serve(
        tmp_path_factory.mktemp("auth"),
        _fake_upstream(
            fake, LLM_MODEL="fake-model", API_KEYS=AUTH_KEYS, CORS_ORIGINS=page_origins[0]
        ),
    )


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture
def offline_client(offline_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=offline_server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium driven by Playwright (never a downloaded browser), for the page, CORS
    and EventSource tests."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed: `make test` installs it (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        yield browser
        browser.close()
