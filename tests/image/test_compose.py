"""docker-compose.yml and the Dockerfile, read as data (no Docker daemon runs here): `up` alone
starts the service on its defaults; the `scale` profile runs two workers of the same image on
its healthy PostgreSQL and Redis behind nginx (deploy/nginx.conf, unbuffered, trusted for
X-Forwarded-*); compose waits longer than the service's shutdown grace before SIGKILL."""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from app.settings import Settings
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


WORKERS = ("worker-1", "worker-2")


def _scale() -> dict[str, Any]:
    services = _compose()["services"]
    return {name: svc for name, svc in services.items() if svc.get("profiles") == ["scale"]}


def test_the_scale_profile_is_two_workers_postgres_redis_and_nginx() -> None:
    scale = _scale()
    assert sorted(scale) == sorted([*WORKERS, "nginx", "postgres", "redis"])
    api = _compose()["services"]["api"]
    for name in WORKERS:
        assert scale[name]["image"] == api["image"]  # the same image, built once per tag
        assert scale[name]["build"] == api["build"]
        assert scale[name]["stop_grace_period"] == api["stop_grace_period"]
        assert "ports" not in scale[name]  # reached through nginx only
    # `up` alone: the api service needs nothing of the profile (it would refuse to start).
    assert "depends_on" not in api


def test_the_workers_use_the_profiles_postgres_and_redis_started_healthy_first() -> None:
    scale = _scale()
    env = scale["postgres"]["environment"]
    for name in ("postgres", "redis"):
        assert scale[name]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")
    for name in WORKERS:
        worker = scale[name]
        url = worker["environment"]["DATABASE_URL"]
        user, password, db = (env[k] for k in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"))
        assert url == f"postgresql://{user}:{password}@postgres:5432/{db}"
        assert worker["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        settings = Settings(**{k.lower(): v for k, v in worker["environment"].items()})
        assert settings.postgres_url is not None and settings.redis_url is not None
        assert worker["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
        }


def test_nginx_serves_the_committed_config_and_waits_for_healthy_workers() -> None:
    nginx = _scale()["nginx"]
    assert "./deploy/nginx.conf:/etc/nginx/conf.d/default.conf:ro" in nginx["volumes"]
    host, _, container = nginx["ports"][0].partition(":")
    assert container == "80" and host
    # The workers' healthcheck is the image's HEALTHCHECK (/healthz).
    assert "HEALTHCHECK" in (ROOT / "Dockerfile").read_text()
    assert nginx["depends_on"] == {name: {"condition": "service_healthy"} for name in WORKERS}


def test_the_workers_trust_forwarded_headers_from_the_nginx_network_only() -> None:
    compose = _compose()
    scale = _scale()
    assert scale["nginx"]["networks"] == ["edge"]
    (subnet,) = [c["subnet"] for c in compose["networks"]["edge"]["ipam"]["config"]]
    for name in WORKERS:
        assert "edge" in scale[name]["networks"]
        trusted = scale[name]["environment"]["FORWARDED_ALLOW_IPS"]
        assert ipaddress.ip_network(trusted) == ipaddress.ip_network(subnet)
    # postgres and redis are not on it: only nginx (and the workers) may send trusted headers
    for name in ("postgres", "redis"):
        assert "edge" not in (scale[name].get("networks") or [])


def test_the_nginx_config_balances_over_every_worker_unbuffered() -> None:
    conf = (ROOT / "deploy/nginx.conf").read_text()
    conf = re.sub(r"#.*", "", conf)
    upstream = re.search(r"upstream (\w+) \{(.*?)\}", conf, re.S)
    assert upstream
    servers = re.findall(r"^\s*server (\S+);", upstream[2], re.M)
    assert servers == [f"{name}:8000" for name in WORKERS]
    assert f"proxy_pass http://{upstream[1]};" in conf
    directives = {" ".join(line.split()).rstrip(";") for line in conf.splitlines()}
    for needed in (
        "proxy_buffering off",
        "proxy_http_version 1.1",
        'proxy_set_header Connection ""',
        "proxy_set_header X-Forwarded-Proto $scheme",
        "proxy_set_header X-Forwarded-Host $http_host",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for",
        "listen 80",
    ):
        assert needed in directives, needed
    timeout = re.search(r"proxy_read_timeout (\S+);", conf)
    assert timeout and _seconds(timeout[1]) > Settings().ping_interval_s * 2


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
