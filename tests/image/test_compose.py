"""docker-compose.yml and the Dockerfile, read as data (no Docker daemon runs here): `up` alone
starts the service on its defaults, the `scale` profile adds healthy PostgreSQL and Redis, and
compose waits longer than the service's shutdown grace before SIGKILL."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from app.shutdown import ABORT_AFTER_S
from tests.support.live import ROOT


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def _dockerfile_env(path: Path = ROOT / "Dockerfile") -> dict[str, str]:
    text = path.read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for name, value in re.findall(r'(\w+)=("[^"]*"|\S+)', line[4:]):
                env[name] = value.strip('"')
    return env


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", value)
    assert match, value
    return float(match[1]) * {"ms": 0.001, "s": 1.0, "m": 60.0}[match[2]]


def test_up_starts_the_service_alone_on_a_named_volume() -> None:
    services = _compose()["services"]
    default = [name for name, svc in services.items() if not svc.get("profiles")]
    assert default == ["api"]
    api = services["api"]
    assert "DATABASE_URL" not in (api.get("environment") or {})  # the embedded default
    assert api["env_file"] == [{"path": ".env", "required": False}]
    volume, _, target = api["volumes"][0].partition(":")
    assert volume in _compose()["volumes"]
    # The default ./data/langgraph.db, from the image's WORKDIR, is on the volume.
    assert target == "/srv/data"
    assert re.search(r"^WORKDIR /srv$", (ROOT / "Dockerfile").read_text(), re.M)


def test_the_scale_profile_adds_healthy_postgres_and_redis_the_service_waits_for() -> None:
    services = _compose()["services"]
    for name in ("postgres", "redis"):
        assert services[name]["profiles"] == ["scale"]
        assert services[name]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")
        dep = services["api"]["depends_on"][name]
        # required: false, or `up` without the profile refuses a dependency it disabled.
        assert dep == {"condition": "service_healthy", "required": False}


def test_compose_waits_past_the_grace_before_sigkill() -> None:
    grace = float(_dockerfile_env()["SHUTDOWN_GRACE_S"])
    stop = _seconds(_compose()["services"]["api"]["stop_grace_period"])
    # The grace, then streams cut and connections aborted within ABORT_AFTER_S, then the
    # lifespan's final write: leave it at least 2 s.
    assert grace + ABORT_AFTER_S + 2 <= stop, (grace, stop)


def test_the_image_runs_uvicorn_as_pid_1_as_a_user_with_a_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    cmd = json.loads(re.findall(r"^CMD (\[.*\])$", text, re.M)[-1])
    assert cmd[:3] == ["python", "-m", "uvicorn"]  # exec form: no shell between
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert "/healthz" in text.split("HEALTHCHECK", 1)[1].split("\n\n")[0]
    env = _dockerfile_env()
    assert env["PYTHONMALLOC"] == "malloc"
    assert re.search(r"^ARG BASE=", text, re.M) and "FROM ${BASE}" in text
