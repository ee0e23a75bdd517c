# Quick start:  make run   (set up + main job on the built-in SynthMUSIC data)
#               make test  (set up incl. Debian packages, make lint, the test suite)
#               make lint  (the layer contracts, lint-imports, and ruff; needs the dev set-up)
VENV ?= .venv
PY := $(VENV)/bin/python
PRESET ?= cpu
PYTEST_ARGS ?=

.PHONY: run test lint setup setup-dev assets
setup:
	scripts/setup.sh train,export
setup-dev:
	scripts/setup.sh --system dev
run: setup
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
