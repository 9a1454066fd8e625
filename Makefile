# Two commands for a fresh machine; each creates the virtualenv it needs.
#   make demo   install servesim; plan the cheapest fleet for the shipped mixed chat + image
#               scenario and write its HTML report
#   make test   install servesim with its test tools, torch (CPU, pinned) and ray; run the tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/servesim: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(BIN)/servesim

# Tests also time real kernels (tests/calibration: torch, pinned in the calibration extra) and
# run a sweep on a local Ray (the sweep extra).
$(VENV)/.test-deps: $(BIN)/servesim pyproject.toml
	$(BIN)/pip install --quiet -e ".[dev,calibration,sweep]"
	touch $@

.PHONY: demo quickstart test bench lint two-shapes schema calibrate
demo: $(BIN)/servesim
	$(BIN)/servesim plan scenarios/plan_mixed_chat_image.yaml -o results/plan_mixed
	$(BIN)/servesim report results/plan_mixed

quickstart: $(BIN)/servesim
	$(BIN)/servesim run scenarios/quickstart.yaml -o results/quickstart

test: $(VENV)/.test-deps
	$(BIN)/python -m pytest

bench: $(BIN)/servesim
	$(BIN)/servesim bench

lint: $(VENV)/.test-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

two-shapes: $(BIN)/servesim
	$(BIN)/python -m sim.docgen.two_shapes --out docs

schema: $(BIN)/servesim
	$(BIN)/python -m sim.docgen.schema

calibrate: $(VENV)/.test-deps
	$(BIN)/servesim calibrate --model llama-tiny --device cpu --quick -o profiles/cpu
	$(BIN)/servesim calibrate --model sd-tiny --device cpu --quick -o profiles/cpu
