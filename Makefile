# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CHROMIUM := /usr/bin/chromium

.PHONY: demo test setup setup-test bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: setup.py | $(BIN)/python
	$(BIN)/pip install -q -e .
	$(BIN)/pip install -q --no-deps $$($(BIN)/python -c 'import runpy; print(*runpy.run_path("setup.py", run_name="pins")["NO_DEPS"])')
	touch $@

$(VENV)/.test: setup.py $(VENV)/.runtime
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# The headless browser of the serve test (tests/test_serve.py): Debian's chromium, driven by Playwright
$(CHROMIUM):
	apt-get update -q && apt-get install -y -q chromium

setup: $(VENV)/.runtime
setup-test: $(VENV)/.test $(CHROMIUM)

demo: setup
	$(BIN)/dex-portrait animate --overwrite

test: setup-test
	$(BIN)/lint-imports --no-cache --no-logo
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup --durations=25 tests

bench: setup-test
	$(BIN)/dex-portrait bench motion
