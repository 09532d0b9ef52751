# scail-worker: `make demo` and `make test` work on a fresh clone; every other target is a step of those two.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Reinstalled whenever a requirements file changes.
INSTALLED := $(VENV)/.installed
# Pinned so installs behave the same everywhere (25.3 also applies this machine's torch cap in build environments).
PIP_VERSION := 25.3

VOLUME := build/volume
VOLUME_READY := $(VOLUME)/.complete
# The tiny volume is rebuilt when the code that writes it (or the model code it imports) changes.
VOLUME_SOURCES := $(shell find tools common wan2gp_integration pose -name '*.py' -not -path '*/__pycache__/*' 2>/dev/null)
OUTPUTS := outputs

.PHONY: help venv volume demo test lint clean

help:
	@echo "make demo   run one job of test_input.json on the CPU against a tiny volume; the mp4 lands in $(OUTPUTS)/"
	@echo "make test   run the test suite"
	@echo "make lint   ruff, hadolint and actionlint (as CI runs them)"
	@echo "make clean  remove build/ and $(OUTPUTS)/ (keeps $(VENV))"

# -qq: pip warns about every missing local index folder of the machine's pip config; errors still show.
$(INSTALLED): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --disable-pip-version-check pip==$(PIP_VERSION)
	$(PY) -m pip install -qq --disable-pip-version-check -r requirements-dev.txt
	@touch $@

venv: $(INSTALLED)

$(VOLUME_READY): $(INSTALLED) $(VOLUME_SOURCES)
	rm -rf $(VOLUME)
	$(PY) tools/make_volume.py --out $(VOLUME) --size tiny
	$(PY) tools/make_demo_inputs.py --out $(VOLUME)/demo
	@touch $@

volume: $(VOLUME_READY)

# No bucket settings: the worker writes the video under SCAIL_OUTPUT_DIR and answers its path.
demo: $(VOLUME_READY)
	mkdir -p $(OUTPUTS)
	env -u BUCKET_ENDPOINT_URL -u SCAIL_SELF_TEST SCAIL_MODEL_ROOT=$(abspath $(VOLUME)) SCAIL_OUTPUT_DIR=$(abspath $(OUTPUTS)) \
		SCAIL_DEVICE=cpu $(PY) runpod_handler.py
	@find $(OUTPUTS) -name '*.mp4' -newer $(VOLUME_READY) -exec ls -l {} +

test: $(INSTALLED)
	$(PY) -m pytest -q

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/hadolint Dockerfile
	$(VENV)/bin/actionlint

clean:
	rm -rf build $(OUTPUTS)
