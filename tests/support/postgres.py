"""PostgreSQL for the tests: the machine's server, and throwaway clusters a test may restart.

The tests use the server at `TEST_DATABASE_URL` for real and fail (never skip) when it does not
answer. Each test works in a schema of its own (`schema()`: the URL's `search_path`, and an
`application_name` naming the schema so a test can find its own connections), dropped
afterwards, so runs of the suite never meet.

`Cluster` is a server of a test's own (initdb into a temp dir, `pg_ctl` on a free port) for what
must never be done to the shared one: stopping and restarting it. initdb refuses to run as root,
so as root the cluster runs as the `postgres` user (the Debian package creates it).

`python -m tests.support.postgres` (`make test-services`) makes sure the tests' server answers:
if nothing does at a local `TEST_DATABASE_URL`, it starts a cluster there (kept in
`TEST_POSTGRES_DATA`), and it creates the database if it is missing.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.support.fake_openai import free_port

DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
START = "make test-services (it starts PostgreSQL on 127.0.0.1:5432 and creates database `test`)"
DATA = Path(os.environ.get("TEST_POSTGRES_DATA", "/var/tmp/langgraph-stream-postgres"))


def _bin() -> Path:
    """The PostgreSQL server's programs: TEST_POSTGRES_BIN, else the newest Debian install."""
    if "TEST_POSTGRES_BIN" in os.environ:
        return Path(os.environ["TEST_POSTGRES_BIN"])
    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    return installed[-1] if installed else Path("/usr/lib/postgresql/15/bin")


def connect(url: str = DATABASE_URL) -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection; raises, naming the URL and how to start one, if it is down."""
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        raise RuntimeError(
            f"these tests need the PostgreSQL server at {url} ({exc}); start it: {START}"
        ) from exc


def with_params(url: str, **params: str) -> str:
    """`url` with query parameters added (values already URL-encoded)."""
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{url}{'&' if '?' in url else '?'}{query}"


@contextmanager
def schema(url: str = DATABASE_URL) -> Iterator[str]:
    """A fresh schema on the server at `url`; yields a URL whose connections use it (and are
    named after it: `application_name`). The schema and all in it go afterwards."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    with connect(url) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield with_params(url, options=f"-csearch_path%3D{name}", application_name=name)
    finally:
        with connect(url) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(f"DROP SCHEMA {name} CASCADE")


def application_name(url: str) -> str:
    """The `application_name` of a URL made by `schema()`."""
    return url.rpartition("application_name=")[2].split("&")[0]


def terminate(name: str, url: str = DATABASE_URL) -> int:
    """Kill the server processes serving connections named `name` (as an idle timeout or an
    administrator would); return how many."""
    with connect(url) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = %s",
            (name,),
        ).fetchone()
    assert row is not None
    return int(str(row[0]))


def backends(name: str, url: str = DATABASE_URL) -> set[int]:
    """The pids of the server processes serving connections named `name`."""
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (name,)
        ).fetchall()
    return {int(str(pid)) for (pid,) in rows}


class Cluster:
    """A PostgreSQL server on 127.0.0.1:`port` (trust auth, user postgres, database postgres),
    by default on a free port in a temp dir that `close()` removes."""

    def __init__(self, directory: Path | None = None, port: int | None = None) -> None:
        self.bin = _bin()
        for tool in ("initdb", "pg_ctl"):
            if not (self.bin / tool).exists():
                raise RuntimeError(
                    f"{self.bin / tool} is missing: these tests start a PostgreSQL server of"
                    " their own (apt-get install postgresql, or set TEST_POSTGRES_BIN)"
                )
        self.port = port or free_port()
        self.dir = directory or Path(tempfile.mkdtemp(prefix="pg-cluster-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user is not None:
            info = pwd.getpwnam(self._user)
            os.chown(self.dir, info.pw_uid, info.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            self._run(
                "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync",
                "-E", "UTF8", "--locale=C",
            )  # fmt: skip

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed: {done.stdout}{done.stderr}\n{log}")

    def _options(self) -> str:
        return f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"

    def start(self) -> Cluster:
        """Start the server and wait until it accepts connections."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", self._options(),
                  "-w", "-t", "30", "start")  # fmt: skip
        return self

    def stop(self) -> None:
        """Stop it at once (`-m fast`: clients are disconnected) and wait until it is down."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")

    def restart(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", self._options(),
                  "-m", "fast", "-w", "-t", "30", "restart")  # fmt: skip

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def ensure_server() -> None:
    """The tests' server answers and has the tests' database (see the module's docstring)."""
    params = conninfo_to_dict(DATABASE_URL)
    host, port = str(params.get("host", "")), int(str(params.get("port", 5432)))
    database = str(params.get("dbname", "test"))
    admin = make_conninfo(DATABASE_URL, dbname="postgres")
    try:
        psycopg.connect(admin, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        if host not in ("127.0.0.1", "localhost"):
            raise RuntimeError(f"no PostgreSQL server answers at {DATABASE_URL} ({exc})") from exc
        print(f"starting PostgreSQL on 127.0.0.1:{port} for the tests (data in {DATA})")
        Cluster(DATA, port).start()
    with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
            return
        print(f"creating database {database!r} for the tests")
        with contextlib.suppress(psycopg.errors.DuplicateDatabase):  # made at once elsewhere
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


if __name__ == "__main__":
    ensure_server()
