# Every target bootstraps what it needs: a fresh clone only needs python3 (3.11+), Java 17+
# and Maven (the local Kafka broker's jars and the schema registry, fetched once from Maven
# Central into ~/.cache/bridge or $BRIDGE_CACHE_DIR), Go (helm is built from source once,
# ~2 min) and apt (promtool comes out of Debian's prometheus package).
PYTHON ?= python3
# VENV: where the virtualenv lives; CI runs the tests once per Python, each in its own
# (`make test PYTHON=/usr/bin/python3 VENV=.venv-system`).
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# promtool, helm, kubernetes-validate: installed by .ci/install-tools.sh into the shared cache
TOOLS_BIN := $(or $(BRIDGE_TOOLS_BIN),$(or $(BRIDGE_CACHE_DIR),$(HOME)/.cache/bridge)/tools/bin)

.PHONY: install kafka-jars registry tools demo test test-unit alerts-check helm-check lint \
	format typecheck check clean bench image image-test chart-schema fuzz

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

kafka-jars: install
	$(BIN)/python -m bridge.dev.kafka --fetch-only

## tools: promtool, helm and kubernetes-validate into the cache (skipped when present)
tools:
	bash .ci/install-tools.sh

## registry: fetch Apicurio Registry (Confluent-compatible schema registry) for the tests
registry: install
	$(BIN)/python -m bridge.dev.registry --fetch-only

## demo: simulator venues → bridge → real Kafka → decoded records on screen (Ctrl-C stops;
##       `make demo ARGS="--count 20"` stops after 20 records)
demo: kafka-jars
	$(BIN)/bridge demo $(ARGS)

## test: every test (unit, integration against a real broker and registry, end to end,
##       alert rules, chart)
test: kafka-jars registry tools
	$(BIN)/pytest -m "not image" $(ARGS)

## image: build the container image without Docker (buildah, a Debian-made base; root only)
image:
	bash .ci/image.sh $(IMAGE)

## image-test: build the image, then run it: --version, `bridge check` on the chart's configs,
##             an end-to-end run (simulators → the image → the test broker), read-only root
image-test: image kafka-jars tools
	$(BIN)/pytest tests/image $(ARGS)

## alerts-check: promtool check + unit tests of the alert rules (and the pytest wrapper)
alerts-check: install tools
	$(TOOLS_BIN)/promtool check rules helm/bridge/files/alerts.yaml
	$(TOOLS_BIN)/promtool test rules tests/alerts/alerts_test.yaml
	$(BIN)/pytest tests/alerts $(ARGS)

## chart-schema: regenerate the `config` part of helm/bridge/values.schema.json from the
##               settings model (bridge/settings.py); the chart tests fail until it is run
chart-schema: install
	$(BIN)/python helm/chart_schema.py

## helm-check: helm lint, template (default + full values) validated offline, bridge check on
##             the rendered config, promtool on the rendered PrometheusRule, one-source checks
helm-check: install tools
	$(BIN)/pytest tests/deploy $(ARGS)

## fuzz: hostile frames against both venues, FUZZ_EXAMPLES per property (`make test` runs
##       1,000, drawn the same every run; this draws new ones); prints the counts (frames,
##       records, dead letters by reason, crashes)
FUZZ_EXAMPLES ?= 20000
fuzz: install
	BRIDGE_FUZZ_RANDOM=1 BRIDGE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest tests/unit/test_fuzz_frames.py -s -q $(ARGS)

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

## bench: throughput vs a bare producer, latency, 1,000-stream fan-out, recovery (JSON + PNG in
##        tests/bench/results/; `make bench ARGS="--only latency"`, `ARGS=--quick` for a smoke run)
bench: kafka-jars
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m tests.bench.run $(ARGS)
