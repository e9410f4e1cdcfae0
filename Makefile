# lita-serve: every command sets itself up first (a virtualenv in .venv).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU build of PyTorch; a plain `torch` requirement would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
REPO ?= model_repository
PYTEST_ARGS ?=

.PHONY: setup load-deps test demo serve eval bench load soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[serve,load,dev]"
	touch $(STAMP)

setup: $(STAMP)

# perf_analyzer (in the tritonclient wheel) links Debian's libb64.
load-deps:
	@ldconfig -p | grep -q libb64.so.0d || apt-get install -y -q libb64-0d >/dev/null 2>&1 || \
		(apt-get update -q >/dev/null && apt-get install -y -q libb64-0d >/dev/null)

test: setup load-deps
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

demo: setup
	$(BIN)/lita demo --repository $(REPO)

$(REPO)/lita.json: $(STAMP)
	$(BIN)/lita demo --build-only --repository $(REPO)

serve: setup $(REPO)/lita.json
	$(BIN)/lita serve --repository $(REPO)

eval: setup
	$(BIN)/lita eval --repository $(REPO)

bench: setup
	$(BIN)/python -m benchmarks.run_all --short

load: setup load-deps $(REPO)/lita.json
	$(BIN)/lita load-test --repository $(REPO)

soak: setup
	$(BIN)/python -m benchmarks.soak --short

clean:
	rm -rf $(VENV) artifacts
