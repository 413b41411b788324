# Two set-up commands: `make demo` and `make test`. Both create .venv if missing and install the
# pinned versions from constraints.txt, so a fresh machine with Python 3.11 needs nothing else.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench venv clean

$(STAMP): setup.py constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or: make PYTHON=/path/to/python3.11 ...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m pipelines.demo

# The report's browser test needs Debian's chromium (installed here when missing and possible).
test: $(STAMP)
	@bash .ci/install_chromium.sh
	$(PY) -m pytest -q --durations=15 tests

# ruff (packages and tests) and mypy (the five packages), configured in pyproject.toml.
lint: $(STAMP)
	$(VENV)/bin/ruff check common model training transforms pipelines tests
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(VENV)/bin/tileseg bench --size 8192

clean:
	rm -rf demo-output bench-output
