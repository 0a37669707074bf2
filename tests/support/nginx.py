"""A real nginx on a free loopback port, as a subprocess of the test, with a committed config:
the README's ("Behind a reverse proxy", `readme_site`) in front of one live server, or
deploy/nginx.conf (`deploy_site`, what compose's `scale` profile runs) in front of several
workers. Only the backend addresses and the listen port are swapped for the test's.

nginx is Debian's package; `make test` installs it when missing. A test that needs it fails
loudly without it, never skips.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.support.fake_openai import free_port
from tests.support.live import ROOT
from tests.support.readme import readme_block

DEPLOY_CONF = ROOT / "deploy" / "nginx.conf"


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        pytest.fail("nginx is not installed: `make test` installs it (apt-get install -y nginx)")
    return found


def readme_site(backend_port: int) -> str:
    """The README's server block, its backend swapped for `backend_port`."""
    site = readme_block("Behind a reverse proxy", "nginx")
    assert "127.0.0.1:8000" in site
    return site.replace("127.0.0.1:8000", f"127.0.0.1:{backend_port}")


def deploy_site(backend_ports: Sequence[int]) -> str:
    """deploy/nginx.conf, its upstream's `server NAME:8000;` lines pointed at `backend_ports`
    in order (as many ports as the file has servers)."""
    site = DEPLOY_CONF.read_text()
    servers = re.findall(r"^\s*server ([\w.-]+:8000);", site, re.M)
    assert len(servers) == len(backend_ports), (servers, backend_ports)
    for name, port in zip(servers, backend_ports, strict=True):
        site = site.replace(f"server {name};", f"server 127.0.0.1:{port};")
    return site


class Nginx:
    """nginx serving `site` (a config for nginx's `http` block that says `listen 80;`) on a
    free loopback port instead."""

    def __init__(self, tmp: Path, site: str) -> None:
        self.port = free_port()
        self.dir = tmp
        assert "listen 80;" in site
        site = site.replace("listen 80;", f"listen 127.0.0.1:{self.port};")
        temp = " ".join(
            f"{kind}_temp_path {tmp}/{kind};" for kind in ("client_body", "proxy", "fastcgi")
        )
        temp += f" uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;"
        self.conf = tmp / "nginx.conf"
        self.conf.write_text(
            f"daemon off; worker_processes 1; pid {tmp}/nginx.pid;\n"
            f"error_log {tmp}/error.log info;\n"
            "events { worker_connections 512; }\n"
            f"http {{ access_log off; {temp}\n{site}\n}}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        binary = nginx_binary()
        self.proc = subprocess.Popen(
            [binary, "-p", str(self.dir), "-c", str(self.conf), "-e", str(self.dir / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited ({self.proc.returncode}):\n{self.logs()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"nginx did not listen in 10 s:\n{self.logs()}")

    def logs(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
