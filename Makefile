# Realtime Pipelines — every target installs what it needs first.
#   make run    install, then run the logs job on its built-in synthetic stream
#   make test   install, then run the whole test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
JOB    ?= logs
ARGS   ?=

.PHONY: install run test bench docs clean help

help:
	@echo "make install | run [JOB=logs ARGS=...] | test | bench | docs | clean"

install: $(STAMP)

# Re-installs only when the requirements or setup.py change.
$(STAMP): requirements.txt requirements-dev.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

run: install
	$(PY) -m pipelines $(JOB) --streaming $(ARGS)

test: install
	$(PY) -m pytest -q

# Benchmarks: events/s per core against plain pyarrow, peak memory of a
# 10-million-record replay; writes bench/RESULTS.md (a few minutes).
bench: install
	$(PY) bench/run.py $(BENCH_ARGS)

# Regenerates the README's option and table reference from the code.
docs: install
	$(PY) -m pipelines.docs --write README.md

clean:
	rm -rf output bench/out .pytest_cache build *.egg-info
