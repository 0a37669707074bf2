# Everything installs itself: uv (pinned, from PyPI) into .uv/, the locked packages into .venv/.
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .uv/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install test-system-deps test-services run test check lint types bench bench-quick clean image image-base image-clean

$(UV):
	$(PYTHON) -m venv .uv
	.uv/bin/pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.installed: $(UV) uv.lock pyproject.toml
	$(UV) sync --frozen --python $(PYTHON)
	touch $@

install: $(VENV)/.installed

run: install
	PYTHONMALLOC=malloc $(PY) -m uvicorn app.main:app --host $(HOST) --port $(PORT)

# Debian packages some tests drive for real: nginx (tests/api/test_forwarded.py), Chromium
# (tests/api/test_browser.py), buildah and debootstrap (tests/image/test_image.py), Redis
# (the rate limits' Redis storage, tests/api/test_limits.py), PostgreSQL (the PostgreSQL store,
# tests/store/test_postgres*.py), Node.js and npm (the JS SDK, tests/api/test_langgraph_js.py;
# its packages want Node >= 20.19: under bookworm's own nodejs 18 the test installs Node 20 from
# the npm registry into tests/js/.node). Installed only when missing (`package:command` when the
# command is not named after the package); the tests fail loudly without them.
TEST_SYSTEM_PACKAGES := nginx chromium buildah debootstrap redis-server postgresql:pg_ctlcluster \
  nodejs:node npm
REDIS_PORT ?= 6379
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo)

test-system-deps:
	@missing=""; for entry in $(TEST_SYSTEM_PACKAGES); do pkg=$${entry%%:*}; \
	  PATH="$$PATH:/usr/sbin" command -v $${entry#*:} >/dev/null || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (Debian packages, for the proxy and browser tests)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# The Redis server the tests use at 127.0.0.1:$(REDIS_PORT): started here when nothing answers;
# the same for PostgreSQL at 127.0.0.1:5432, with its database `test` (tests/support/postgres.py).
test-services: install test-system-deps
	@if ! redis-cli -h 127.0.0.1 -p $(REDIS_PORT) ping >/dev/null 2>&1; then \
	  echo "starting redis-server on 127.0.0.1:$(REDIS_PORT) for the tests"; \
	  PATH="$$PATH:/usr/sbin:/usr/bin" redis-server --daemonize yes --bind 127.0.0.1 \
	    --port $(REDIS_PORT) --save '' --appendonly no; \
	  for i in 1 2 3 4 5 6 7 8 9 10; do \
	    redis-cli -h 127.0.0.1 -p $(REDIS_PORT) ping >/dev/null 2>&1 && break; sleep 0.5; done; \
	  redis-cli -h 127.0.0.1 -p $(REDIS_PORT) ping >/dev/null; \
	fi
	@$(PY) -m tests.support.postgres

test: install test-services
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check app graphs tests bench
	$(VENV)/bin/ruff format --check app graphs tests bench
	$(VENV)/bin/lint-imports

types: install
	$(VENV)/bin/mypy

check: lint types

bench: install
	$(PY) -m bench $(BENCH_ARGS)

bench-quick: install
	$(PY) -m bench --quick $(BENCH_ARGS)

# The image (README, "Image and compose"), in buildah's own storage (no Docker daemon needed):
# a Debian base made by debootstrap, built once and kept, then the Dockerfile on top of it.
IMAGE := localhost/langgraph-stream:latest
IMAGE_BASE := localhost/langgraph-stream-base:bookworm
# The mirror apt uses here (deb822 or one-line sources), else Debian's own.
DEBIAN_MIRROR ?= $(or $(shell sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1),$(shell sed -n 's/^deb  *\(http[^ ]*\)  *bookworm .*/\1/p' /etc/apt/sources.list 2>/dev/null | head -n1),http://deb.debian.org/debian)
BUILDAH := $(SUDO) buildah --storage-driver vfs

image-base: test-system-deps
	@if $(BUILDAH) inspect --type image $(IMAGE_BASE) >/dev/null 2>&1; then \
	  echo "$(IMAGE_BASE): kept from an earlier run (make image-clean rebuilds it)"; \
	else \
	  set -e; dir=$$(mktemp -d); trap '$(SUDO) rm -rf "$$dir"' EXIT; \
	  echo "debootstrap bookworm from $(DEBIAN_MIRROR)"; \
	  $(SUDO) debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
	    bookworm "$$dir/root" $(DEBIAN_MIRROR) >"$$dir/debootstrap.log" || { tail -n 20 "$$dir/debootstrap.log"; exit 1; }; \
	  : "this host's own CAs too (a network that re-signs TLS): the build fetches uv and the lock"; \
	  for crt in /usr/local/share/ca-certificates/*.crt; do if [ -e "$$crt" ]; then $(SUDO) cp "$$crt" "$$dir/root/usr/local/share/ca-certificates/"; fi; done; \
	  $(SUDO) chroot "$$dir/root" update-ca-certificates >/dev/null; \
	  $(SUDO) rm -rf "$$dir"/root/var/cache/apt/archives/*.deb "$$dir"/root/var/lib/apt/lists/*; \
	  ctr=$$($(BUILDAH) from scratch); mnt=$$($(BUILDAH) mount "$$ctr"); \
	  $(SUDO) cp -a "$$dir/root/." "$$mnt/"; $(BUILDAH) umount "$$ctr" >/dev/null; \
	  $(BUILDAH) config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd /bin/bash "$$ctr"; \
	  $(BUILDAH) commit --quiet --rm "$$ctr" $(IMAGE_BASE) >/dev/null; \
	  echo "$(IMAGE_BASE): built"; \
	fi

image: image-base
	$(BUILDAH) bud --isolation chroot --network host --layers --format docker \
	  --build-arg BASE=$(IMAGE_BASE) -t $(IMAGE) .

image-clean:
	-$(BUILDAH) rmi --force $(IMAGE) $(IMAGE_BASE)
	-$(BUILDAH) rmi --prune

clean:
	rm -rf .venv .uv .pytest_cache .mypy_cache .ruff_cache
