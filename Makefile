# oxloop's developer commands. `make help` lists them.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(VENV)/.ready: requirements-dev.txt requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV)/.ready ## Create .venv with the development tools

build: venv ## Build oxloop (release) into .venv
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(VENV)/bin/maturin develop --release --quiet

demo: build ## Run the demo: the asyncio model on oxloop vs asyncio (and uvloop)
	$(PY) examples/demo.py

test-servers: ## Install what tests run beside the project (PostgreSQL, tmux), if missing
	bash scripts/test-servers.sh

test: build test-servers ## Run every test: cargo (oxloop and benches/loadgen), pytest, CPython's test_asyncio conformance
	cargo test --quiet
	cargo test --quiet --manifest-path benches/loadgen/Cargo.toml
	$(PY) -m pytest -q
	$(PY) tests/conformance/run.py

test-debug: build test-servers ## pytest again in asyncio debug mode (PYTHONASYNCIODEBUG=1), as users run it
	PYTHONASYNCIODEBUG=1 $(PY) -m pytest -q --ignore=tests/test_timers_memory.py

OTHER_PYTHONS ?= 3.10 3.12 3.13

test-versions: test-servers ## pytest and the conformance run on every other supported interpreter found
	@for v in $(OTHER_PYTHONS); do \
	  py=$$(pyenv prefix $$v 2>/dev/null)/bin/python; \
	  [ -x "$$py" ] || py=$$(command -v python$$v || true); \
	  if [ -z "$$py" ] || [ ! -x "$$py" ]; then echo "python$$v: not installed, skipped"; continue; fi; \
	  venv=.venv-$$v; \
	  [ $$venv/.ready -nt requirements-test.txt ] || { { [ -x $$venv/bin/python ] || $$py -m venv $$venv; } && $$venv/bin/pip install --quiet -r requirements-test.txt && touch $$venv/.ready; } || exit 1; \
	  echo "== python$$v"; \
	  VIRTUAL_ENV=$$PWD/$$venv $$venv/bin/maturin develop --quiet || exit 1; \
	  $$venv/bin/python -m pytest -q -x tests || exit 1; \
	  $$venv/bin/python tests/conformance/run.py || exit 1; \
	done

lint: venv ## Lints: clippy, rustfmt, ruff, mypy, stubtest
	cargo clippy --all-targets -- -D warnings
	cargo fmt --check
	cargo clippy --manifest-path benches/loadgen/Cargo.toml --all-targets -- -D warnings
	cargo fmt --manifest-path benches/loadgen/Cargo.toml --check
	$(VENV)/bin/ruff check python tests benches examples scripts
	$(VENV)/bin/mypy
	$(PY) -m mypy.stubtest oxloop._oxloop

check-next-pythons: ## Compile the extension for CPython 3.14 and 3.15 (no interpreter needed)
	bash scripts/check-next-pythons.sh

wheel: venv ## Build a release wheel for $(PYTHON) into dist/ (manylinux tag checked by maturin, stripped)
	rm -f dist/oxloop-*.whl
	$(VENV)/bin/maturin build --release --strip --quiet --out dist --interpreter $(PYTHON)

wheel-check: wheel ## Install the wheel in a fresh venv with no Rust or compiler on PATH; run a smoke program (TCP, TLS, a subprocess, a process pool)
	PYTHON=$(PYTHON) bash scripts/wheel-check.sh

bench: build ## Micro-benchmarks: asyncio vs uvloop vs oxloop
	$(PY) benches/micro.py

ECHO_ARGS ?=

bench-echo: build ## Pinned echo benchmark: asyncio vs uvloop vs oxloop (and a pure-Rust floor)
	$(PY) benches/echo.py $(ECHO_ARGS)

CONNECTIONS_ARGS ?=

bench-connections: build ## Connection churn (plain and TLS), TLS echo, uvicorn and aiohttp: asyncio vs uvloop vs oxloop (and a Rust floor)
	$(PY) benches/echo.py --only churn,tls-churn,tls,uvicorn,aiohttp --conns 8 --rounds 5 $(CONNECTIONS_ARGS)

PROCESSES_ARGS ?=

bench-processes: build ## Subprocess spawn and pipe throughput: asyncio vs uvloop vs oxloop
	$(PY) benches/processes.py $(PROCESSES_ARGS)

.PHONY: help venv build demo test-servers test test-debug test-versions lint check-next-pythons wheel wheel-check bench bench-echo bench-connections bench-processes
