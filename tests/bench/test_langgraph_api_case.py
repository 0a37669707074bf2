"""The `langgraph_api` bench case's reader and figures (bench/cases/langgraph_api.py), in
short form: the real service on the fake upstream in its own process, its native and LangGraph
APIs read with the case's own httpx reader. (The case's `langgraph dev` target needs its own
venv and ~20 s to start; `make bench` exercises it, not this test.)
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from app.protocols.langgraph import PREFIX
from bench.cases._common import aio
from bench.cases.langgraph_api import (
    FIRST_S,
    LG_PREFIX,
    NATIVE,
    OURS,
    Api,
    Samples,
    Streamed,
    _chars,
    figures,
    lg_api_available,
    read,
)
from bench.harness import Process, Upstream, service

TOKENS = 50


@pytest.fixture(scope="module")
def server() -> Iterator[Process]:
    with Upstream().start("/stats") as upstream, service(upstream).start("/readyz") as s:
        yield s


def _read(api: Api, query: str) -> Streamed:
    async def main() -> Streamed:
        async with httpx.AsyncClient(timeout=30) as http:
            return await read(http, api, query)

    return aio(main())


def test_the_reader_gets_the_whole_native_answer_and_its_first_token(server: Process) -> None:
    api = Api(NATIVE, server, "/graphs/chat/stream", langgraph=False)
    got = _read(api, f"[[tokens={TOKENS}]] [[first={FIRST_S}]]")
    assert got.text_chars == _chars(TOKENS)
    assert got.first_text_at is not None
    assert got.sent_at + FIRST_S <= got.first_text_at <= got.closed_at


def test_the_reader_gets_the_whole_answer_from_langgraph_messages_events(server: Process) -> None:
    """`messages` events (CRLF lines, an empty first and last chunk) read as the SDK reads them."""
    assert LG_PREFIX == PREFIX
    assert lg_api_available(server) == ""
    api = Api(OURS, server, f"{LG_PREFIX}/runs/stream", langgraph=True)
    got = _read(api, f"[[tokens={TOKENS}]] [[first={FIRST_S}]]")
    assert got.text_chars == _chars(TOKENS)
    assert got.first_text_at is not None
    assert got.sent_at + FIRST_S <= got.first_text_at <= got.closed_at


def test_the_reader_fails_a_langgraph_stream_with_an_error_event(server: Process) -> None:
    api = Api(OURS, server, f"{LG_PREFIX}/runs/stream", langgraph=True)
    with pytest.raises(RuntimeError, match="lg-api: error event"):
        _read(api, "[[tokens=5]] [[error_after=2]]")


def test_the_reader_fails_a_stream_that_does_not_complete(server: Process) -> None:
    api = Api(NATIVE, server, "/graphs/chat/stream", langgraph=False)
    with pytest.raises(RuntimeError, match=r"native: (error|end)"):
        _read(api, "[[tokens=5]] [[error_after=2]]")


def test_without_the_langgraph_api_its_figures_say_so_and_the_others_stand() -> None:
    native = Samples([100.0], [2000.0], [10.0], [2100.0], [0.1])
    reference = Samples([400.0], [800.0], [500.0], [900.0], [1.0])
    out = figures(native, Samples([], [], [], [], []), reference, 2000, "assistants.search 404")
    ours = [f for f in out if "ours" in f.name]
    assert ours and all(f.met is None and "not measured" in f.note for f in ours)
    dev = next(f for f in out if f.name.endswith("langgraph dev 0.16.7") and f.unit == "us")
    assert dev.ratios == [4.0]
