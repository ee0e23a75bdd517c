# Quick start:  make run   (set up the edge install + the shipped default model on the built-in clips)
#               make test  (set up incl. Debian packages, make lint, the test suite)
# Also:         make train (set up + train, evaluate and export the cpu preset on SynthMUSIC)
#               make lint  (the layer contracts, lint-imports, and ruff; needs the dev set-up)
VENV ?= .venv
PY := $(VENV)/bin/python
PRESET ?= cpu
PYTEST_ARGS ?=

.PHONY: run train test lint setup setup-edge setup-dev assets
setup:
	scripts/setup.sh train,export
setup-edge:
	scripts/setup.sh live
setup-dev:
	scripts/setup.sh --system dev
run: setup-edge
	$(VENV)/bin/avsl-edge demo --out avsl-demo
train: setup
	$(PY) -m training.pipeline --preset $(PRESET)
test: setup-dev
	$(MAKE) lint
	$(PY) -m pytest -q $(PYTEST_ARGS)
lint:  # the import contracts of pyproject.toml ([tool.importlinter]: the layers), then ruff ([tool.ruff])
	PYTHONPATH=$(CURDIR) $(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
assets:  # rebuild the SynthMUSIC v2 asset pack from the Debian and npm registries
	scripts/setup.sh --asset-sources dev
	$(PY) -m training.data.build_assets --pack v2
