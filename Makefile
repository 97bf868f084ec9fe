# The README's two commands are `make demo` and `make test`; both create .venv when it is missing.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch and torchvision come from the package registry (a CUDA build that also runs on the CPU). An empty
# PIP_FIND_LINKS keeps a machine-local folder of wheels, such as a CPU-only torch that cannot load
# torchvision, from shadowing them.
PIP := PIP_FIND_LINKS= $(BIN)/python -m pip

.PHONY: install demo test lab docs export clean bench ui

$(STAMP): settings.ini setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e ".[dev]"
	@touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/trainbench demo

# nbdev_test runs two notebooks at a time on two cores: one torch thread each, not two each. The notebooks' caches go
# to a temporary folder, not the user's (~/.cache/trainbench); the pytest suite makes its own (tests/conftest.py).
# Runs in the notebooks are not logged to MLflow (its import and store cost seconds per kernel); 10_tracking tests the
# logging itself.
# pytest runs in two worker processes, one torch thread each: while one waits on a kernel, a server or a subprocess,
# the other trains. --dist loadfile keeps each file's tests (and its module fixtures) in one worker; the datasets and
# shared runs of tests/conftest.py are made once for both.
test: $(STAMP)
	export TRAINBENCH_CACHE=$$(mktemp -d); TRAINBENCH_TRACKING=off OMP_NUM_THREADS=1 $(BIN)/nbdev_test --n_workers 2; s=$$?; rm -rf "$$TRAINBENCH_CACHE"; exit $$s
	OMP_NUM_THREADS=1 $(BIN)/pytest tests -n 2 --dist loadfile

lab: $(STAMP)
	$(BIN)/jupyter lab --ip=127.0.0.1 --notebook-dir=nbs

export: $(STAMP)
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean

# The documentation site, built from the notebooks into _docs/ (open _docs/index.html, or serve it with
# `python -m http.server -d _docs`). With Quarto installed this is nbdev's `nbdev_docs`. Without it (no package
# registry carries Quarto), nbdev's own notebook processing writes _proc/ and Sphinx + myst-nb + sphinx-book-theme
# render it: myst-nb shows the outputs the notebooks saved without running them (docs never re-run training) and
# parses show_doc's Markdown (its tables), Sphinx's search is a static index that works offline, and the toctree
# keeps nbdev's notebook order. tools/docs.py says more.
docs: $(STAMP)
	$(BIN)/python tools/docs.py

# The MLflow UI over the default store (outputs/mlflow/) on http://127.0.0.1:5000.
ui: $(STAMP)
	$(BIN)/trainbench ui

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf outputs _docs _proc
