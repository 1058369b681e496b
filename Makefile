# SegTune: `make test` (the CI command) and `make demo` (the main job); both create/update .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.segtune-installed
APT_PACKAGES := mricron-data insighttoolkit5-examples dataset-fashion-mnist

.PHONY: venv test demo system-deps bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@# The local CPU build of torch, only when none is present (never a CUDA build from PyPI).
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[slicer,test,bench,cluster]"
	@$(MAKE) -s system-deps
	@touch $(STAMP)

# Real data sets from Debian packages (Colin27 head MRI, an LSA-stored brain MRI, Fashion-MNIST).
# Tests that need them skip with a reason where they cannot be installed.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || echo "warning: could not install$$missing; tests that need them will skip"; \
	  else echo "warning: missing Debian packages$$missing (not root); tests that need them will skip"; fi; \
	fi

test: venv
	$(PY) -m pytest -q

demo: venv
	@mkdir -p demo-output
	$(PY) -m MRIFieldOfViewLib demo --output demo-output/MRIFieldOfView
	$(PY) -m KidneyUSLib demo --output demo-output/KidneyUS

clean:
	rm -rf $(VENV) demo-output .pytest_cache
