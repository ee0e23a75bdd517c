# Quick start:  make run   (set up + main job on the built-in SynthMUSIC data)
#               make test  (set up incl. Debian packages + the test suite)
VENV ?= .venv
PY := $(VENV)/bin/python
PRESET ?= cpu
PYTEST_ARGS ?=

.PHONY: run test setup setup-dev assets
setup:
	scripts/setup.sh train,export
setup-dev:
	scripts/setup.sh --system dev
run: setup
	$(PY) -m training.pipeline --preset $(PRESET)
test: setup-dev
	$(PY) -m pytest -q $(PYTEST_ARGS)
assets:  # rebuild the SynthMUSIC v2 asset pack from the Debian and npm registries
	scripts/setup.sh --asset-sources dev
	$(PY) -m training.data.build_assets --pack v2
