# The two commands of the README. Everything is installed into .venv by these targets;
# torch is pinned and installed first (an unpinned torch would pull the CUDA build).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
CLIENT_WHEELS := open-webui==0.12.4

.PHONY: serve test lint install install-test system-deps bench wheelhouse

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e .
	touch $@

# llama-cpp-python compiles llama.cpp (~3 min on 2 cores); only the library is built
LLAMA_CMAKE_ARGS := -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAVA_BUILD=OFF -DLLAMA_CURL=OFF

$(VENV)/.test: pyproject.toml $(VENV)/.runtime | system-deps
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(BIN)/pip install --quiet -e '.[test,gguf]'
	# clients whose own request code the tests run against a server, unpacked, not installed
	# (Open WebUI's dependencies are an application's); see tests/support/clients.py
	$(BIN)/pip download --quiet --no-deps --dest $(VENV)/clients $(CLIENT_WHEELS)
	touch $@

install: $(VENV)/.runtime
install-test: $(VENV)/.test

# Redis, PostgreSQL, Prometheus, Docker... for the tests (Debian packages; a no-op once installed)
system-deps:
	bash scripts/install-system-deps.sh

serve: install
	$(BIN)/embedgate serve

lint: install-test
	$(BIN)/ruff check src tests benchmarks deploy scripts
	$(BIN)/ruff format --check src tests benchmarks deploy scripts
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python scripts/import_cycles.py

# two workers: tests that start real servers take free ports and temp dirs of their own; the
# container tests share one dockerd and its images, so they run in one worker (loadgroup)
test: lint system-deps
	$(BIN)/pytest -n 2 --dist loadgroup

# every wheel the image needs, for `docker build --network=none .` (scripts/wheelhouse.sh)
wheelhouse:
	bash scripts/wheelhouse.sh

bench: install-test
	$(BIN)/python benchmarks/throughput.py
