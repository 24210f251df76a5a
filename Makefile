# Campaign Console — the two commands: `make run` and `make test`.
# Each creates .venv when missing and installs what it needs; nothing is installed by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# QtWebEngine's sandbox cannot start as root (CI, containers).
export QTWEBENGINE_CHROMIUM_FLAGS ?= --no-sandbox --disable-gpu

.PHONY: run test lint bench engine screenshots clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[console,dev]'
	touch $(STAMP)

# The console starts the local stack (embedded NATS, engine, inbox). Without a screen it says so
# and runs the engine with demo traffic instead.
run: $(STAMP)
	$(BIN)/campaign-console

engine: $(STAMP)
	$(BIN)/campaign-engine run

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

# Refresh the pictures in docs/screenshots/: every widget and console test runs, since any of
# them may save one (a name filter missed the ones that did not say "screenshot").
screenshots: $(STAMP)
	CAMPAIGN_SCREENSHOTS=1 QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q \
		tests/widgets tests/console

bench: $(STAMP)
	$(BIN)/python -m bench.pipeline

clean:
	rm -rf $(VENV) build *.egg-info
