"""Per-run limits enforced from inside the model call, where they can really stop it.

`RunGuard` is a LangChain callback handler attached to every run. It sees each token as the
model produces it, so it can:
- stop a run that exceeds its token budget (`TokenLimitExceeded`), and
- stop a *synchronous* node (`llm.invoke` running in a worker thread) after its run was
  cancelled or timed out: cancelling the run's task cannot interrupt a thread, but raising from
  the token callback ends the model's stream at the next token, which closes its HTTP request.

`raise_error` makes LangChain propagate what we raise; `run_inline` keeps the check in the
thread (or task) that produces the token instead of a thread pool.
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import BaseCallbackHandler


class RunStopped(Exception):
    """Raised into a model call whose run was cancelled or timed out (seen only by that call)."""


class TokenLimitExceeded(Exception):
    """The run produced more tokens than its `max_tokens`."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the run produced more than {limit} tokens")
        self.limit = limit


class RunTooLarge(Exception):
    """The run's event log passed its byte budget (MAX_RUN_LOG_MB)."""

    def __init__(self, limit_bytes: int) -> None:
        mb = limit_bytes / (1024 * 1024)
        super().__init__(f"the run's events passed the server's limit of {mb:g} MB")


class RunGuard(BaseCallbackHandler):
    raise_error = True
    run_inline = True

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self.tokens = 0
        self.stopped = False

    def stop(self) -> None:
        """Make the next token of any model call of this run raise `RunStopped`."""
        self.stopped = True

    def on_llm_new_token(self, token: str | list[str | dict[str, Any]], **kwargs: Any) -> None:
        if self.stopped:
            raise RunStopped("run stopped")
        if token:
            self.tokens += 1
            if self.tokens > self.max_tokens:
                raise TokenLimitExceeded(self.max_tokens)
