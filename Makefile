# ossiclass: `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DEMO := outputs/demo

.PHONY: install test test-slow demo lint clean

install: $(INSTALLED)

# Re-installs only when pyproject.toml changes; a second `make install` does nothing slow.
# --no-compile: Python compiles only the modules it imports, on first import, instead of pip
# compiling all of torch's and CUDA's (about a minute of the install on 2 cores).
$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile -e '.[dev]'
	touch $@

test: install
	$(BIN)/python -m pytest -q

# The slow tests (training runs, DDP over two processes, many workers): a few minutes more.
test-slow: install
	$(BIN)/python -m pytest -q -m slow

# Synthetic tiles, training, evaluation on unseen labs, three slides classified with reports.
demo: install
	$(BIN)/python scripts/demo.py --out $(DEMO)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf outputs .pytest_cache .ruff_cache
