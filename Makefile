# Two commands do all the set-up on a fresh machine with Python >= 3.11:
#   make run    installs biomaj in .venv, creates ./demo with an example bank, serves it on :5000
#   make test   installs biomaj with its test tools in .venv and runs the tests
PYTHON ?= python3
VENV   ?= .venv
ROOT   ?= demo
BIN     = $(VENV)/bin

.PHONY: run test install clean

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

# The rsync protocol's tests run the rsync program (a Debian package).
test: $(BIN)/.installed
	@command -v rsync >/dev/null || { echo "installing rsync for the rsync protocol tests"; \
	  (apt-get update -qq && apt-get install -y -qq rsync) >/dev/null || \
	  { echo "rsync is missing: install it (apt-get install rsync)"; exit 1; }; }
	@# The web UI's browser tests drive Debian's chromium through Playwright (they skip without it).
	@command -v chromium >/dev/null || { echo "installing chromium for the web UI browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core) \
	  >/dev/null || echo "chromium is missing: install it (apt-get install chromium); the browser tests skip"; }
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
