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

.PHONY: demo quickstart test bench lint two-shapes schema reference docs-check calibrate
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
	$(BIN)/python -m sim.docgen.two_shapes --out docs/explanation

schema: $(BIN)/servesim
	$(BIN)/python -m sim.docgen.schema

# docs/reference/: scenario fields, CLI flags and the catalog, generated from the code
reference: $(BIN)/servesim
	$(BIN)/python -m sim.docgen.reference

# every `servesim` command and Python snippet in README.md and docs/, the slow ones too (calibrate,
# validate, fidelity, plan, sweep, bench: many minutes on 2 cores); `make test` runs the cheap ones
docs-check: $(VENV)/.test-deps
	SERVESIM_DOC_SLOW=1 $(BIN)/python -m pytest tests/unit/test_doc_commands.py

calibrate: $(VENV)/.test-deps
	$(BIN)/servesim calibrate --model llama-tiny --device cpu --quick -o profiles/cpu
	$(BIN)/servesim calibrate --model sd-tiny --device cpu --quick -o profiles/cpu
