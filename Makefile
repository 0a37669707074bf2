# Everything installs itself: uv (pinned, from PyPI) into .uv/, the locked packages into .venv/.
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .uv/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install test-system-deps run test check lint types bench bench-quick clean

$(UV):
	$(PYTHON) -m venv .uv
	.uv/bin/pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.installed: $(UV) uv.lock pyproject.toml
	$(UV) sync --frozen --python $(PYTHON)
	touch $@

install: $(VENV)/.installed

run: install
	PYTHONMALLOC=malloc $(PY) -m uvicorn app.main:app --host $(HOST) --port $(PORT)

# Debian packages some tests drive for real: nginx (tests/api/test_forwarded.py) and Chromium
# (tests/api/test_browser.py). Installed only when missing; the tests fail loudly without them.
TEST_SYSTEM_PACKAGES := nginx chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo)

test-system-deps:
	@missing=""; for pkg in $(TEST_SYSTEM_PACKAGES); do \
	  PATH="$$PATH:/usr/sbin" command -v $$pkg >/dev/null || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (Debian packages, for the proxy and browser tests)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

test: install test-system-deps
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

clean:
	rm -rf .venv .uv .pytest_cache .mypy_cache .ruff_cache
