"""`chat`: the single streaming LLM node.

Written the way the LangGraph docs write it: one node that awaits the model and returns the
answer. The service streams its tokens from the model call; the node itself does nothing
special for streaming.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from graphs.models import ModelContext

description = "The single streaming LLM node: answers a query, token by token."


class ChatInput(TypedDict):
    query: str


class ChatOutput(TypedDict):
    answer: str


class ChatState(ChatInput, ChatOutput):
    pass


async def llm(state: ChatState, runtime: Runtime[ModelContext]) -> dict[str, str]:
    response = await runtime.context.llm.ainvoke(state["query"])
    return {"answer": response.text}


graph = StateGraph(
    ChatState, context_schema=ModelContext, input_schema=ChatInput, output_schema=ChatOutput
)
graph.add_node("llm", llm)
graph.add_edge(START, "llm")
graph.add_edge("llm", END)
