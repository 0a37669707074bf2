"""The live server fuzzed from its own `/openapi.json` with schemathesis: no `5xx`, and every
response is what the schema says (a documented status, its content type, its body schema).

Fixed seed (`derandomize`), at most 25 examples per operation. Two servers: one open (no
`API_KEYS`), one with a key, where every request is sent both with the key and without it (a
documented `401`). What a failure found becomes a regression test in tests/api/test_hostile.py."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.live import LiveServer

KEY = "fuzz-key-0123456789abcdef"
HEADER_SETS: dict[str, dict[str, dict[str, str]]] = {
    "open": {"no key": {}},
    "keyed": {"key": {"X-Api-Key": KEY}, "no key": {}},
}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module", params=["open", "keyed"])
def fuzzed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, dict[str, dict[str, str]]]]:
    """Only the shipped graphs (the schema names their inputs), the offline model at full
    speed, and room for every run the fuzzer starts; with `API_KEYS` for "keyed"."""
    env = {"GRAPHS_DIR": "graphs", "OFFLINE_TOKEN_DELAY_S": "0", "MAX_CONCURRENT_RUNS": "1000"}
    if request.param == "keyed":
        env["API_KEYS"] = f"fuzz={KEY}"
    server = LiveServer(tmp_path_factory.mktemp("fuzz"), env).start()
    yield server, HEADER_SETS[request.param]
    server.stop()


def _fuzz(
    operation: Any,
    url: str,
    header_sets: dict[str, dict[str, str]],
    statuses: Counter[tuple[str, int]],
) -> None:
    """Up to 25 generated requests to one operation, each sent with every header set; raises
    what schemathesis found."""
    label = operation.label

    @given(case=operation.as_strategy())
    @settings(
        max_examples=25,
        derandomize=True,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        phases=[Phase.explicit, Phase.generate],
    )
    def call(case: Case[Any]) -> None:
        for headers in header_sets.values():
            response = case.call_and_validate(
                base_url=url, headers=headers, checks=CHECKS, timeout=15
            )
            statuses[label, response.status_code] += 1

    call()


def test_the_server_answers_as_its_schema_says(
    fuzzed: tuple[LiveServer, dict[str, dict[str, str]]],
) -> None:
    server, header_sets = fuzzed
    schema_headers = next(iter(header_sets.values()))  # the key, where there is one
    api = schemathesis.openapi.from_url(f"{server.url}/openapi.json", headers=schema_headers)
    found: dict[str, str] = {}
    statuses: Counter[tuple[str, int]] = Counter()
    for result in api.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an Err raises here: a bad schema
        try:
            _fuzz(operation, server.url, header_sets, statuses)
        except Exception as exc:  # every operation's first failure, then one assert
            found[operation.label] = str(exc)[:2000]
    assert not found, "\n\n".join(f"{label}:\n{text}" for label, text in found.items())
    # The schema is good enough for a fuzzer to start real runs, not only to be refused.
    for graph in ("agent", "approval", "chat", "report"):
        assert statuses[f"POST /graphs/{graph}/runs", 202] > 0, statuses
        assert statuses[f"POST /graphs/{graph}/stream", 200] > 0, statuses
    if "key" in header_sets:  # and the same requests without it were refused
        assert statuses["POST /graphs/chat/runs", 401] > 0, statuses
    print(sorted(statuses.items()))


def test_the_schema_names_the_graphs_and_documents_streams(
    fuzzed: tuple[LiveServer, dict[str, dict[str, str]]],
) -> None:
    import httpx

    server, header_sets = fuzzed
    spec = httpx.get(f"{server.url}/openapi.json", headers=next(iter(header_sets.values()))).json()
    stream = spec["paths"]["/graphs/chat/stream"]["post"]
    assert list(stream["responses"]["200"]["content"]) == ["text/event-stream"]
    assert set(stream["responses"]) >= {
        "200",
        "204",
        "400",
        "401",
        "404",
        "409",
        "413",
        "422",
        "429",
    }
    for status in ("404", "422", "500"):
        ref = stream["responses"][status]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/ErrorBody")
    watch = spec["paths"]["/runs/{run_id}/stream"]["get"]
    assert list(watch["responses"]["200"]["content"]) == ["text/event-stream"]
    one = spec["paths"]["/graphs/{graph}"]["get"]
    graph = next(p for p in one["parameters"] if p["name"] == "graph")
    assert graph["schema"]["enum"] == ["agent", "approval", "chat", "report"]
    for name in graph["schema"]["enum"]:
        for route in ("stream", "runs"):
            body = spec["paths"][f"/graphs/{name}/{route}"]["post"]["requestBody"]
            ref = body["content"]["application/json"]["schema"]["$ref"]
            assert ref == f"#/components/schemas/RunBody_{name}"
    chat = spec["components"]["schemas"]["chat_input"]
    assert chat["required"] == ["query"]
    agent = spec["components"]["schemas"]["agent_input"]
    assert agent["properties"]["messages"]["items"]["$ref"].endswith("/agent_InputMessage")
