# Every target bootstraps what it needs: a fresh clone only needs python3 (3.11+), Java 17+
# and Maven (for the local Kafka broker's jars and the schema registry, fetched once from Maven
# Central into ~/.cache/bridge or $BRIDGE_CACHE_DIR).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install kafka-jars registry demo test test-unit lint format typecheck check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

kafka-jars: install
	$(BIN)/python -m bridge.devkafka --fetch-only

## registry: fetch Apicurio Registry (Confluent-compatible schema registry) for the tests
registry: install
	$(BIN)/python -m bridge.devregistry --fetch-only

## demo: simulator venues → bridge → real Kafka → decoded records on screen (Ctrl-C stops;
##       `make demo ARGS="--count 20"` stops after 20 records)
demo: kafka-jars
	$(BIN)/bridge demo $(ARGS)

## test: every test (unit, integration against a real broker, end to end)
test: kafka-jars registry
	$(BIN)/pytest $(ARGS)

test-unit: install
	$(BIN)/pytest -m unit $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: install
	$(BIN)/mypy

check: lint typecheck test

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
