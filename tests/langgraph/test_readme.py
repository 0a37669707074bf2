"""The README's LangGraph SDK snippet, run as documented against the live server."""

from __future__ import annotations

from typing import Any

from tests.support.fake_openai import token_text
from tests.support.live import LiveServer
from tests.support.readme import readme_block


def test_the_readme_sdk_snippet_streams_the_answer(server: LiveServer) -> None:
    namespace: dict[str, Any] = {"__name__": "readme_snippet"}
    code = readme_block("LangGraph SDK and agent-chat-ui", "python")
    exec(compile(code, "README", "exec"), namespace)
    assert namespace["URL"] == "http://127.0.0.1:8000/langgraph"  # what `make run` serves
    text = namespace["ask"]("[[tokens=7]] hello", url=server.url + "/langgraph")
    assert text == "".join(token_text(i) for i in range(7))
