# lita-serve: every command sets itself up first (a virtualenv in .venv).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU build of PyTorch; a plain `torch` requirement would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
REPO ?= model_repository
PYTEST_ARGS ?=
# perf_analyzer ships in tritonclient[all]==2.51.0, which cannot share an environment with the
# current tritonclient the client uses: it gets a tool environment of its own.
PERF_VENV ?= .venv-perf
PERF_STAMP := $(PERF_VENV)/.installed
export LITA_PERF_ANALYZER := $(abspath $(PERF_VENV))/bin/perf_analyzer

.PHONY: setup perf-tools load-deps media-deps test test-fast demo serve eval bench load soak rss gpu-bundle gpu-check clean load-openai

# The server package (runtime core + build step) and the client distribution it takes its
# contract from, both editable.
$(STAMP): pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ./client -e ".[serve,load,dev]"
	touch $(STAMP)

setup: $(STAMP)

$(PERF_STAMP):
	$(PYTHON) -m venv $(PERF_VENV)
	$(PERF_VENV)/bin/pip install -q "tritonclient[all]==2.51.0" nvidia-cuda-runtime-cu12
	touch $(PERF_STAMP)

# perf_analyzer links Debian's libb64 and the CUDA runtime wheel (no GPU needed).
perf-tools: $(PERF_STAMP) load-deps

load-deps:
	@ldconfig -p | grep -q libb64.so.0d || apt-get install -y -q libb64-0d >/dev/null 2>&1 || \
		(apt-get update -q >/dev/null && apt-get install -y -q libb64-0d >/dev/null)

# The media-matrix tests encode their videos with the ffmpeg command line (Debian's ffmpeg).
media-deps:
	@command -v ffmpeg >/dev/null || apt-get install -y -q ffmpeg >/dev/null 2>&1 || \
		(apt-get update -q >/dev/null && apt-get install -y -q ffmpeg >/dev/null)

test: setup perf-tools media-deps
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The quick loop while working: every test that starts no tritonserver and is not marked slow
# (tests/conftest.py marks server tests, and fails one that starts a server unmarked).
test-fast: setup perf-tools media-deps
	$(BIN)/python -m pytest -q -m "not server and not slow and not gpu" $(PYTEST_ARGS)

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

load: setup perf-tools $(REPO)/lita.json
	$(BIN)/lita load-test --repository $(REPO)

# Streamed requests over gRPC and over the OpenAI-compatible endpoint, side by side (concurrency 1 and 8).
load-openai: setup perf-tools $(REPO)/lita.json
	$(BIN)/python -m lita_serve.loadtest.endpoint_compare --repository $(REPO)

soak: setup
	$(BIN)/python -m benchmarks.soak --short

# Resident memory of every model process of a running demo server.
rss: setup $(REPO)/lita.json
	$(BIN)/lita rss --repository $(REPO)

# The offline bundle for a GPU machine without tritonserver, a video decoder or a network: the
# stripped tritonserver + python backend, numpy 1.x for its stub, decord, tritonclient (from
# registry wheels), and the two videos the check asks about. Made here; git ignores it.
GPU_BUNDLE ?= .gpu-bundle
gpu-bundle: setup
	$(PYTHON) -m benchmarks.gpu_bundle --out $(GPU_BUNDLE)
	$(BIN)/python -m benchmarks.gpu_serving --write-media $(GPU_BUNDLE)/media

# On the CUDA machine, with that machine's own Python and torch (no setup, nothing downloaded):
# installs the bundle, then parity, the demo and a LITA-13B-shaped repository served by
# tritonserver, figures against the bandwidth bound; exits 2 without CUDA.
GPU_PYTHON ?= python3
GPU_BANDWIDTH_TBS ?= 4.8
GPU_SITE ?= /tmp/lita-gpu-site
GPU_REPORT ?= artifacts/gpu_check.json
gpu-check:
	$(GPU_PYTHON) -m benchmarks.gpu_bundle --install $(GPU_BUNDLE) --target $(GPU_SITE)
	PYTHONPATH=$(GPU_SITE):src:client:build:. $(GPU_PYTHON) -m benchmarks.gpu_check \
		--bandwidth-tbs $(GPU_BANDWIDTH_TBS) --media $(GPU_BUNDLE)/media --out $(GPU_REPORT)

clean:
	rm -rf $(VENV) $(PERF_VENV) artifacts
