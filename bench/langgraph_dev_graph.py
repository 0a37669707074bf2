"""The `chat` graph as `langgraph dev` serves it in the bench (bench/langgraph_dev.py).

graphs/chat.py takes its model from `runtime.context.llm`, which the service injects; the
reference server cannot inject our context, so this module builds the model itself: a stock
`ChatOpenAI` to the bench's fake upstream (`BENCH_UPSTREAM_BASE_URL`, set by the runner), with
the naive baseline's settings (bench/baselines.py). Same schemas, one node `llm` that awaits
the model on the query, as graphs/chat.py.
"""

from __future__ import annotations

import os

from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict


class ChatInput(TypedDict):
    query: str


class ChatOutput(TypedDict):
    answer: str


class ChatState(ChatInput, ChatOutput):
    pass


model = ChatOpenAI(
    api_key="x",
    base_url=os.environ.get("BENCH_UPSTREAM_BASE_URL", "http://127.0.0.1:9/v1"),
    model="fake",
    streaming=True,
    stream_usage=True,
    max_retries=0,
)


async def llm(state: ChatState) -> dict[str, str]:
    response = await model.ainvoke(state["query"])
    return {"answer": response.text}


builder = StateGraph(ChatState, input_schema=ChatInput, output_schema=ChatOutput)
builder.add_node("llm", llm)
builder.add_edge(START, "llm")
builder.add_edge("llm", END)
graph = builder.compile()
