# Two commands do all set-up on a fresh machine:  `make serve`  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Offline copy of the corpora (laid out like shared/data). Defaults to ../shared/data when it
# exists; without it, training downloads the public archives into ~/.cache/sentiment-service.
ifneq ($(wildcard ../shared/data/sst2),)
export SENTIMENT_DATA_MIRROR ?= $(abspath ../shared/data)
endif

.PHONY: install serve train test e2e lint bench clean

# Three installs into one .venv, each done once (again when pyproject.toml changes), with pip's
# progress shown: serving ([project] dependencies only), training (+ the `train` extra), and the
# tests' (+ the `dev` extra, which includes `train`).
$(BIN)/.installed-serve: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	@echo "== installing the serving dependencies into $(VENV) (the first time: a minute or two) =="
	$(BIN)/python -m pip install -e .
	touch $@

$(BIN)/.installed-train: $(BIN)/.installed-serve
	@echo "== installing the training dependencies (the train extra) into $(VENV) =="
	$(BIN)/python -m pip install -e '.[train]'
	touch $@

$(BIN)/.installed-dev: $(BIN)/.installed-serve
	@echo "== installing the test and development dependencies (the dev extra) into $(VENV) =="
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

install: $(BIN)/.installed-dev

## Serve the API on http://127.0.0.1:8000 with the shipped models/default (SENTIMENT_MODEL_DIR=artifacts: your own).
serve: $(BIN)/.installed-serve
	$(BIN)/python -m app

## Train an SST-2 model on gold labels into artifacts/ (see `python -m training --help`; README: distillation).
train: $(BIN)/.installed-train
	$(BIN)/python -m training --out artifacts

## Lint and run the whole test suite.
test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: treated as a failure" >&2; exit 1; fi; \
	exit $$rc

## Build the image and run docker-compose.yml for real: replicas stopped and killed under load, overload
## memory, offline /docs (scripts/compose_e2e.py; needs a Docker engine, or ../shared/docker/engine.sh).
e2e: install
	$(BIN)/python scripts/compose_e2e.py

bench: install
	$(BIN)/python -m bench.serve_bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
