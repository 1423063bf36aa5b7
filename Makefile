# slmfleet: `make demo` and `make test` each do all set-up on a fresh Debian machine.
#
#   make demo                     set up, then run the embedded demo and exit
#   make demo DEMO_ARGS="--nodes 2 --limit 5"
#   make test                     set up, then lint and run the whole test suite
#   make lint                     ruff + mypy --strict
#   make images                   build the worker, agent and coordinator images (needs an engine)
#   make docker-engine            install and start Debian's Docker engine (root)
#   make postgres                 install and start a local PostgreSQL for the store tests (root)
#
# llama-cpp-python is compiled once into $(WHEELHOUSE) (outside the checkout, so every
# clone on this machine reuses it); the venv is rebuilt only when pyproject.toml changes.

PYTHON      ?= python3
VENV        ?= .venv
WHEELHOUSE  ?= $(HOME)/.cache/slmfleet/wheelhouse
DEMO_ARGS   ?= --exit
PYTEST_ARGS ?=
# the PostgreSQL server of the store tests (tests/support/postgres.py); `make postgres`
# (deploy/dev/postgres.sh) sets up this default one
export SLMFLEET_TEST_POSTGRES_URL ?= postgresql+psycopg://slmfleet:slmfleet@127.0.0.1:5432/slmfleet_test
BIN         := $(VENV)/bin
STAMP       := $(VENV)/.slmfleet-installed

.PHONY: setup demo test lint system clean images docker-engine containers postgres

setup: $(STAMP)

system:
	bash deploy/dev/system-packages.sh

$(STAMP): pyproject.toml deploy/dev/system-packages.sh deploy/dev/wheelhouse.sh
	bash deploy/dev/system-packages.sh
	WHEELHOUSE="$(WHEELHOUSE)" PYTHON="$(PYTHON)" bash deploy/dev/wheelhouse.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --find-links "$(WHEELHOUSE)" \
		--only-binary llama-cpp-python -e '.[test,embeddings]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/slmfleet demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: $(STAMP) lint containers postgres
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The Docker engine and the images for the container tests. In CI a failure stops the
# run; elsewhere (say, no root to install the engine) those tests are skipped instead.
containers: $(STAMP)
	@if bash deploy/dev/docker-engine.sh && bash deploy/docker/build-images.sh; then :; \
	elif [ -n "$$CI" ]; then echo "make containers failed (required in CI)" >&2; exit 1; \
	else echo "warning: no Docker engine or images: the container tests will be skipped" >&2; fi

# A local PostgreSQL server (Debian's postgresql) for the store tests. In CI a failure
# stops the run; elsewhere (say, no root to install it) those tests are skipped instead.
postgres:
	@if bash deploy/dev/postgres.sh; then :; \
	elif [ -n "$$CI" ]; then echo "make postgres failed (required in CI)" >&2; exit 1; \
	else echo "warning: no PostgreSQL server: the PostgreSQL store tests will be skipped" >&2; fi

images: $(STAMP)
	bash deploy/docker/build-images.sh

docker-engine:
	bash deploy/dev/docker-engine.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .slmfleet build *.egg-info
