# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint format install clean

BASE_STAMP := $(VENV)/.installed-base

# (Re)install when pyproject.toml changes; pip resolves torch 2.14.1 / torchvision 0.29.1
# from the wheels on the CI machines. pip byte-compiles what it installs: these machines set
# PYTHONDONTWRITEBYTECODE, so skipping that would recompile torch in every process.
$(BASE_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	touch $(BASE_STAMP)

# The test tools, Ray and LAION's reference reader on top (the demo needs none of them).
$(STAMP): $(BASE_STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# import-linter reads the installed layout (db/ is dreamrate.db there), so the layer
# contract is checked on a throw-away install of the checkout.
LAYOUT := build/layout

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	rm -rf $(LAYOUT) build/lib build/bdist.*
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation --no-compile --target $(LAYOUT) .
	cd $(LAYOUT) && ../../$(BIN)/lint-imports --config ../../pyproject.toml --no-cache

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# One test process per core and one more: end-to-end tests spend part of their time waiting
# on a bot, a child process or a rate limit, and the extra process fills those gaps (on
# 2 cores: 13.3 min with 2 processes, 10.7 min with 3). At most 8: each holds torch in
# memory. PYTEST_WORKERS=0 runs the suite in one process. worksteal: each process starts
# with its share of the tests (the toy model's first, see tests/conftest.py) and takes from
# the others' queues when it runs out.
PYTEST_WORKERS ?= $(shell $(PYTHON) -c "import os; print(min(len(os.sched_getaffinity(0)) + 1, 8))")
test: lint
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal

# The whole loop offline in a few minutes: a local Discord-compatible server, the real bot,
# tiny models unless real ones are configured; everything lands in ./demo.
demo: $(BASE_STAMP)
	$(BIN)/dreamrate demo

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info build
