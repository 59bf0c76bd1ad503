# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Each creates .venv when missing and installs the package with the extras it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
# torch/torchvision pins for this machine (see constraints.txt).
PIPFLAGS := -q -c constraints.txt

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.core: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install $(PIPFLAGS) -e .
	touch $@

# The demo's data is simulated: it needs the maps (UMAP, t-SNE, HDBSCAN), not torch.
$(VENV)/.demo: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install $(PIPFLAGS) -e '.[maps]'
	touch $@ $(VENV)/.core

$(VENV)/.dev: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install $(PIPFLAGS) -e '.[dev,all]'
	touch $@ $(VENV)/.core $(VENV)/.demo

demo: $(VENV)/.demo
	$(BIN)/labelql demo

# pytest exits 5 when it collected no test: that is a failure here, said plainly.
test: $(VENV)/.dev
	$(BIN)/python -m pytest -q -p no:cacheprovider tests || { rc=$$?; \
	  [ $$rc -eq 5 ] && echo "make test: pytest collected no tests" >&2; exit $$rc; }

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

bench: $(VENV)/.dev
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/parse.py
	$(BIN)/python benchmarks/signals.py
	$(BIN)/python benchmarks/engine.py
	$(BIN)/python benchmarks/repl.py
	$(BIN)/python benchmarks/apply.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache demo.duckdb demo_media
