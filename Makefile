# Two commands do all the set-up on a fresh machine with Python >= 3.11:
#   make run    installs biomaj in .venv, creates ./demo with an example bank, serves it on :5000
#   make test   installs biomaj with its test tools in .venv and runs the tests
PYTHON ?= python3
VENV   ?= .venv
ROOT   ?= demo
BIN     = $(VENV)/bin

.PHONY: run test install clean container-test

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "biomaj needs Python >= 3.11, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,fast]'
	@touch $@

install: $(BIN)/.installed

run: $(BIN)/.installed
	@test -f $(ROOT)/config.yml || $(BIN)/biomaj init $(ROOT)
	$(BIN)/biomaj -c $(ROOT)/config.yml ctl check example
	$(BIN)/biomaj -c $(ROOT)/config.yml ctl update example --follow
	exec $(BIN)/biomaj -c $(ROOT)/config.yml serve --all

# tests/prepare.sh installs the programs the tests drive (rsync, ssh, slapd, chromium, Redis,
# RabbitMQ) when they are missing and starts Redis and RabbitMQ when they are down.
test: $(BIN)/.installed
	@bash tests/prepare.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Builds the container image and runs it for real (docker/smoke.sh): single node, scale-out on this
# host's RabbitMQ and Redis, the compose file. Root, podman (installed when missing) or docker, a few
# minutes. Not part of `make test`.
container-test:
	bash docker/smoke.sh

clean:
	rm -rf $(VENV) .pytest_cache
