"""`agent`: a cyclic ReAct loop. Reason (the model), act (tools), observe, repeat until the
model answers without calling a tool."""

from __future__ import annotations

from typing import Annotated, Literal

from langchain_core.messages import AnyMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from graphs.models import ModelContext
from graphs.tools import TOOLS

description = "A ReAct agent loop with the calculator and current_time tools."


class InputMessage(TypedDict):
    role: Literal["user", "assistant", "system"]
    content: str


class AgentInput(TypedDict):
    messages: list[InputMessage]


class AgentState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


async def agent(state: AgentState, runtime: Runtime[ModelContext]) -> dict[str, list[AnyMessage]]:
    response = await runtime.context.llm.bind_tools(TOOLS).ainvoke(state["messages"])
    return {"messages": [response]}


graph = StateGraph(AgentState, context_schema=ModelContext, input_schema=AgentInput)
graph.add_node("agent", agent)
graph.add_node("tools", ToolNode(TOOLS))
graph.add_edge(START, "agent")
graph.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: END})
graph.add_edge("tools", "agent")
