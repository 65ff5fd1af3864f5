# Leadwire — `make run` (embedded, all services in one process), `make test` (everything).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup chromium run stack test test-fast test-faults lint migrate bench schemas lock helm clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .  # the `leadwire` command
	touch $(STAMP)

setup: $(STAMP)

run: setup  ## all five services in one process: in-process bus, SQLite under .leadwire/
	$(PY) -m services run

stack: setup  ## the distributed topology: local Kafka, PostgreSQL, one process per service
	$(PY) -m services stack

migrate: setup  ## run every service's migrations against DATABASE_URL
	$(PY) -m services migrate

chromium:  ## the browser tests' Chromium: installed when missing (as root), else a clear refusal
	@deploy/local/ensure-chromium.sh

test: setup chromium  ## every test but the fault suite, real Kafka and PostgreSQL included
	LEADWIRE_REQUIRE_BROWSER=1 $(PY) -m pytest -q -p no:cacheprovider -m "not faults"

test-faults: setup  ## kill services, the broker and the database under load; count every lead
	$(PY) -m pytest -q -p no:cacheprovider -m faults -s tests/faults

test-fast: setup  ## unit and service tests only
	$(PY) -m pytest -q -m "not kafka and not postgres"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy shared services scripts tests bench
	$(PY) scripts/check_layers.py

schemas: setup  ## regenerate the published contracts under schemas/ (events, AsyncAPI, OpenAPI)
	$(PY) -m scripts.export_schemas

lock: setup  ## deploy/requirements.lock: the image's pins with hashes, from requirements.txt
	env -u PIP_FIND_LINKS CUSTOM_COMPILE_COMMAND="make lock" $(VENV)/bin/pip-compile --quiet \
		--generate-hashes --allow-unsafe --strip-extras -o deploy/requirements.lock requirements.txt

helm:  ## helm 3.22.0 built through the Go module proxy into .cache/helm (the chart tests use it)
	$(PYTHON) deploy/local/helm.py

bench: setup  ## the benchmarks on throwaway Kafka and PostgreSQL; figures under bench/results/
	$(PY) -m bench.ingest_bench
	$(PY) -m bench.contacts_bench
	$(PY) -m bench.scoring_bench
	$(PY) -m bench.workflows_bench

clean:  ## stop local servers and forget every local state
	-deploy/local/kafka.sh stop
	-deploy/local/postgres.sh stop
	rm -rf .leadwire
