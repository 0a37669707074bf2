# The service image. `make image` builds it with buildah on a Debian base made by debootstrap
# (README, "Image and compose"); `docker build .` / `docker compose build` use the default BASE.
# BASE must provide python3 (3.11+) with venv, and the CA store in /etc/ssl/certs.
ARG BASE=python:3.11-slim-bookworm

# -- build: uv resolves nothing, it installs uv.lock into /srv/.venv --------------------------
FROM ${BASE} AS build
ARG UV_VERSION=0.13.9
# Debian's python refuses `pip install` outside a venv (PEP 668): uv gets a venv of its own,
# which stays in this stage. UV_SYSTEM_CERTS: trust the system CA store, so a network that
# re-signs TLS (with its CA in the base's store) works; pip in Debian already does.
ENV UV_SYSTEM_CERTS=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/srv/.venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/uv && /opt/uv/bin/pip install --no-cache-dir --quiet "uv==${UV_VERSION}"
WORKDIR /srv
# The dependencies alone first: this layer is rebuilt only when the lock changes.
COPY pyproject.toml uv.lock ./
RUN /opt/uv/bin/uv sync --frozen --no-dev --no-install-project --no-cache --python python3

# -- the image: the venv, the source, a non-root user; no uv, no cache ------------------------
FROM ${BASE}
RUN useradd --system --user-group --uid 10001 --home-dir /srv --no-create-home --shell /usr/sbin/nologin app \
 && mkdir -p /srv/data \
 && chown app:app /srv/data
WORKDIR /srv
COPY --from=build /srv/.venv /srv/.venv
COPY app ./app
COPY graphs ./graphs
RUN /srv/.venv/bin/python -m compileall -q app graphs
# PYTHONMALLOC=malloc: as `make run` serves it (app/memory_trim.py). The SQLite default,
# ./data/langgraph.db, is /srv/data/langgraph.db: the one directory the user `app` may write
# (compose mounts its named volume there). SHUTDOWN_GRACE_S stays below compose's
# stop_grace_period (12 s): the grace, then up to 1 s to close streams, then the final write.
ENV PATH="/srv/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONMALLOC=malloc \
    LOG_FORMAT=json \
    SHUTDOWN_GRACE_S=8 \
    UVICORN_HOST=0.0.0.0 \
    UVICORN_PORT=8000
USER app
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('UVICORN_PORT', '8000'), timeout=2)"]
# Exec form: uvicorn is PID 1 and gets the SIGTERM itself (app/shutdown.py). It reads its
# address from UVICORN_HOST/UVICORN_PORT, so `-e UVICORN_PORT=...` moves it (and the check).
CMD ["python", "-m", "uvicorn", "app.main:app"]
