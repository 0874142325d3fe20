# ossiclass: `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DEMO := outputs/demo

.PHONY: install test demo lint clean

install: $(INSTALLED)

# Re-installs only when pyproject.toml changes; a second `make install` does nothing slow.
$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

test: install
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/ossiclass synth tiles $(DEMO)/tiles --per-class 100 --workers 2
	$(BIN)/ossiclass synth sheet $(DEMO)/contact_sheet.png --per-class 6
	$(BIN)/ossiclass synth slide $(DEMO)/growth_plate.tif --layout growth_plate --width 4096 --height 4096 --workers 2
	@echo "demo outputs in $(DEMO): tiles/ (data set and manifest.csv), contact_sheet.png, growth_plate.tif"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf outputs .pytest_cache .ruff_cache
