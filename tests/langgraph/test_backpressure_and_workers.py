"""Through the LangGraph API too: a stalled SDK reader never slows the run or a fast SDK reader
beside it, and gets every token's text merged; and several workers act as one (create on A,
join on B with `Last-Event-ID`, cancel on C)."""

from __future__ import annotations

import threading
from pathlib import Path

from langgraph_sdk import get_sync_client
from langgraph_sdk.schema import StreamPart

from tests.support.fake_openai import FakeOpenAI
from tests.support.live import LiveServer
from tests.support.workers import several_workers

PREFIX = "/langgraph"


def _text(parts: list[StreamPart]) -> str:
    return "".join(p.data[0]["content"] for p in parts if p.event == "messages")


def test_a_stalled_sdk_reader_beside_a_fast_one(server: LiveServer) -> None:
    """20,000 tokens of 400 characters: ~18 MB of parts, far more than the kernel buffers for a
    reader that reads nothing, so the stalled reader lags for most of the run. Its parts over
    the second half of the run (made while it was blocked) are compared with the fast reader's
    over the same ids: merged, they are far fewer."""
    fast_lg = get_sync_client(url=server.url + PREFIX, api_key=None, timeout=120)
    slow_lg = get_sync_client(url=server.url + PREFIX, api_key=None, timeout=120)
    try:
        thread = fast_lg.threads.create()["thread_id"]
        run = fast_lg.runs.create(
            thread,
            "chat",
            input={"query": "[[tokens=20000]] [[size=400]] [[first=0.5]] flood"},
            stream_mode="messages-tuple",
        )
        slow_parts = slow_lg.runs.join_stream(thread, run["run_id"])
        first_slow = next(iter(slow_parts))  # connected and reading: then it stops
        fast: list[StreamPart] = []
        reader = threading.Thread(
            target=lambda: fast.extend(fast_lg.runs.join_stream(thread, run["run_id"]))
        )
        reader.start()
        reader.join(timeout=120)
        assert not reader.is_alive(), "the fast reader waited for the stalled one"
        # The run ended while the stalled reader had read nothing more.
        assert fast_lg.runs.get(thread, run["run_id"])["status"] == "success"
        slow = [first_slow, *slow_parts]
        answer = fast_lg.threads.get_state(thread)["values"]
        assert isinstance(answer, dict)
        assert _text(fast) == _text(slow) == answer["answer"]  # nothing lost or repeated

        last = int(fast[-1].id or 0)

        def late(parts: list[StreamPart]) -> int:
            return sum(1 for p in parts if p.event == "messages" and int(p.id or 0) > last // 2)

        assert late(slow) < late(fast) / 2, (late(slow), late(fast))
    finally:
        fast_lg.http.client.close()
        slow_lg.http.client.close()


def test_create_on_one_worker_join_on_another_cancel_on_a_third(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    abandoned = fake.snapshot().abandoned
    with several_workers(fake, tmp_path, 3) as workers:
        a, b, c = (
            get_sync_client(url=s.url + PREFIX, api_key=None, timeout=60) for s in workers.servers
        )
        try:
            thread = a.threads.create()["thread_id"]
            assert b.threads.get(thread)["status"] == "idle"
            # a whole run on A, replayed from the middle on B: exactly the rest
            done = list(
                a.runs.stream(
                    thread,
                    "chat",
                    input={"query": "[[tokens=6]] one"},
                    stream_mode="messages-tuple",
                )
            )
            run_id = done[0].data["run_id"]
            middle = done[len(done) // 2]
            rest = list(
                b.runs.join_stream(
                    thread, run_id, last_event_id=middle.id, stream_mode="messages-tuple"
                )
            )
            after = [p for p in done if int(p.id or 0) > int(middle.id or 0)]
            # exactly the rest (a replayed backlog's tokens come merged: compare the text)
            assert _text(rest) == _text(after) and rest[-1].id == after[-1].id
            assert all(int(p.id or 0) > int(middle.id or 0) for p in rest)
            assert c.runs.get(thread, run_id)["status"] == "success"
            # a long run on A, joined on B, cancelled on C
            run = a.runs.create(
                thread,
                "chat",
                input={"query": "[[tokens=400]] [[delay=0.02]] two"},
                stream_mode="messages-tuple",
                stream_resumable=True,
            )
            seen: list[StreamPart] = []
            for part in b.runs.join_stream(thread, run["run_id"]):
                seen.append(part)
                if sum(1 for p in seen if p.event == "messages") == 5:
                    c.runs.cancel(thread, run["run_id"])
            assert sum(1 for p in seen if p.event == "messages") < 200
            for client in (a, b, c):
                assert client.runs.get(thread, run["run_id"])["status"] == "interrupted"
            assert c.threads.get(thread)["status"] == "interrupted"
            fake.wait_for(lambda s: s.abandoned >= abandoned + 1, timeout=10)
            # the thread continues on C from what A wrote
            again = list(c.runs.stream(thread, "chat", input={"query": "[[tokens=2]] three"}))
            assert again[-1].event == "values" and again[-1].data["answer"]
            assert [r["run_id"] for r in b.runs.list(thread)][1] == run["run_id"]
        finally:
            for client in (a, b, c):
                client.http.client.close()
