# Everything runs from a local virtualenv; `make test` and `make run` create it on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test transitions lint venv clean demo manifests dashboards bench

# The uplink/resolver transition scenarios at the shipped 15 s interval: minutes of waiting
# each, so they run apart from the rest, (a)-(e) in parallel, one lab per pytest-xdist worker
# and one worker per scenario (5), then (f), whose lab probes HTTP/3 too, alone: a sixth lab
# beside the five left two cores short of CPU, and the labs' simulated DNS answered SERVFAIL
# or late (issue 15's note).
TRANSITIONS := tests/lab/test_transitions.py tests/lab/test_transitions_quic.py
TRANSITIONS_PYTEST = $(BIN)/pytest -n 5 --dist load $(PYTEST_ARGS) tests/lab/test_transitions.py \
	&& $(BIN)/pytest $(PYTEST_ARGS) tests/lab/test_transitions_quic.py

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

## Run the exporter with the built-in Meta catalogue (override: make run ARGS='--config.file my.yml').
run: $(STAMP)
	$(BIN)/meta-outage-exporter run $(ARGS)

## Lint, then the whole test suite. As root it first installs the Debian packages the lab and
## the alerting tests use; without root those tests skip with a message.
test: $(STAMP)
	./scripts/install-system-deps.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest $(addprefix --ignore=,$(TRANSITIONS)) $(PYTEST_ARGS)
	$(TRANSITIONS_PYTEST)

## Only the transition scenarios (tests/lab/test_transitions*.py; root, about 11 minutes):
## figures in test-artifacts/lab-transitions.json.
transitions: $(STAMP)
	./scripts/install-system-deps.sh
	$(TRANSITIONS_PYTEST)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

## The exporter against a simulated Meta on loopback, replaying real outages (no root, no internet).
demo: $(STAMP)
	$(BIN)/meta-outage-exporter demo $(ARGS)

## Regenerate the Grafana dashboards (dashboards/*.json) from dashboards/*.py
## (tests/dashboards/test_generate.py fails while they are stale).
dashboards: $(STAMP)
	$(BIN)/python -m dashboards.generate

## Regenerate deploy/kubernetes/rules/prometheusrule.yaml from alerts/meta-outage.rules.yml
## (tests/deploy/test_kubernetes.py fails while it is stale).
manifests: $(STAMP)
	$(BIN)/python deploy/kubernetes/generate_prometheusrule.py

## Benchmarks against blackbox_exporter, as root (about 25 minutes): writes docs/benchmarks.md
## and docs/benchmarks.json. BENCH_ARGS='--quick' for a few minutes, '--stages cpu,timing'
## for some stages, '--before-ref COMMIT' to measure an older exporter beside this one.
bench: $(STAMP)
	./scripts/install-system-deps.sh
	$(BIN)/python -m bench.suite $(BENCH_ARGS)
