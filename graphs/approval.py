"""`approval`: human in the loop. Draft an answer (streamed), pause for a person to approve it;
approved: finish; rejected with feedback: revise (streamed again) and ask again.

The pause is LangGraph's `interrupt()`: the run ends `paused`, the thread's checkpoint keeps the
draft, and a later run with `{"thread_id": ..., "resume": {"approved": ..., "feedback": ...}}`
continues inside `review`, where `interrupt()` now returns that value.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired

from langgraph.graph import START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import interrupt
from typing_extensions import TypedDict

from graphs.models import ModelContext

description = "Human in the loop: drafts an answer, pauses for approval, revises on feedback."
QUESTION = (
    'Approve this draft? Resume with {"approved": true}, or {"approved": false, "feedback": '
    '"what to change"} to get a revision.'
)


class ApprovalInput(TypedDict):
    request: str


class ApprovalOutput(TypedDict):
    draft: str
    approved: bool
    final: str


class ApprovalState(ApprovalInput, ApprovalOutput):
    feedback: str
    revisions: int


class Review(TypedDict):
    """What a person sends back as `resume`."""

    approved: bool
    feedback: NotRequired[str]


resume_schema = Review


async def draft(state: ApprovalState, runtime: Runtime[ModelContext]) -> dict[str, Any]:
    feedback = state.get("feedback")
    if feedback:
        # Feedback first: it is what this revision is about.
        prompt = (
            f"Revise with this feedback: {feedback}\n\nThe request: {state['request']}\n\n"
            f"The previous draft:\n{state.get('draft', '')}"
        )
    else:
        prompt = f"Draft an answer to this request: {state['request']}"
    response = await runtime.context.llm.ainvoke(prompt)
    return {"draft": response.text, "revisions": state.get("revisions", -1) + 1}


def review(state: ApprovalState) -> dict[str, Any]:
    answer = interrupt({"draft": state["draft"], "question": QUESTION})
    approved = isinstance(answer, dict) and answer.get("approved") is True
    if approved:
        return {"approved": True, "final": state["draft"], "feedback": ""}
    feedback = str(answer.get("feedback") or "") if isinstance(answer, dict) else ""
    return {"approved": False, "final": "", "feedback": feedback or "Please improve it."}


def decided(state: ApprovalState) -> Literal["draft", "__end__"]:
    return "__end__" if state.get("approved") else "draft"


graph = StateGraph(
    ApprovalState,
    context_schema=ModelContext,
    input_schema=ApprovalInput,
    output_schema=ApprovalOutput,
)
graph.add_node("draft", draft)
graph.add_node("review", review)
graph.add_edge(START, "draft")
graph.add_edge("draft", "review")
graph.add_conditional_edges("review", decided)
