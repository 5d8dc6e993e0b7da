# Two entry points, both self-installing: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
KG := $(VENV)/bin/kg
STAMP := $(VENV)/.installed

.PHONY: demo test install lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(VENV)/bin/pip install -q -e '.[local,server,dev]'
	touch $(STAMP)

install: $(STAMP)

# The main job: ingest part of the sample corpus with the embedded default (SQLite + bundled GGUF).
demo: $(STAMP)
	bash scripts/demo.sh $(KG)

# ruff, mypy, the layer rules (.importlinter) and import cycles, then the whole suite on SQLite
# and PostgreSQL (started here if nothing answers on 5432).
test: $(STAMP)
	bash scripts/ensure-postgres.sh
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/python scripts/import_cycles.py
	$(VENV)/bin/python -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/python scripts/import_cycles.py

bench: $(STAMP)
	bash scripts/ensure-postgres.sh
	$(VENV)/bin/python -m benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info
