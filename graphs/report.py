"""`report`: a multi-step generator. Plan the sections, write each one as its own streamed step,
then assemble them into one report. Each section step reports its progress (`{"section": i,
"of": n}`) through the stream writer before it calls the model."""

from __future__ import annotations

from typing import Literal

from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from graphs.models import ModelContext

description = "Plans a report, writes each section as its own streamed step, assembles it."
MAX_SECTIONS = 5


class ReportInput(TypedDict):
    topic: str


class ReportOutput(TypedDict):
    report: str


class ReportState(ReportInput, ReportOutput):
    sections: list[str]
    written: list[str]


async def plan(state: ReportState, runtime: Runtime[ModelContext]) -> dict[str, list[str]]:
    prompt = (
        f"List the section titles for a short report on: {state['topic']}. "
        "Answer with the section titles only, one per line."
    )
    response = await runtime.context.llm.ainvoke(prompt)
    titles = [line.strip(" -*#\t") for line in response.text.splitlines()]
    return {"sections": [t for t in titles if t][:MAX_SECTIONS] or ["Overview"], "written": []}


async def write_section(state: ReportState, runtime: Runtime[ModelContext]) -> dict[str, list[str]]:
    index = len(state.get("written", []))
    title = state["sections"][index]
    # Progress through LangGraph's `custom` stream mode (a no-op when nobody streams it).
    get_stream_writer()({"section": index + 1, "of": len(state["sections"])})
    prompt = f"Write the section '{title}' of a short report on: {state['topic']}."
    response = await runtime.context.llm.ainvoke(prompt)
    return {"written": [*state.get("written", []), f"## {title}\n\n{response.text.strip()}"]}


def more_sections(state: ReportState) -> Literal["write_section", "assemble"]:
    return "write_section" if len(state.get("written", [])) < len(state["sections"]) else "assemble"


def assemble(state: ReportState) -> dict[str, str]:
    return {"report": f"# {state['topic']}\n\n" + "\n\n".join(state["written"])}


graph = StateGraph(
    ReportState, context_schema=ModelContext, input_schema=ReportInput, output_schema=ReportOutput
)
graph.add_node("plan", plan)
graph.add_node("write_section", write_section)
graph.add_node("assemble", assemble)
graph.add_edge(START, "plan")
graph.add_conditional_edges("plan", more_sections)
graph.add_conditional_edges("write_section", more_sections)
graph.add_edge("assemble", END)
