# Two commands for a fresh machine:  `make demo` (main job) and `make test` (tests).
# Both create .venv on first use and reuse it afterwards.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.iqp-installed
ARGS   ?=

.PHONY: install test demo app clean

install: $(STAMP)

# torch first (basicsr builds against it), then basicsr without build isolation
# (otherwise pip builds a second torch in a temporary environment), then the project.
$(STAMP): setup.cfg pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip wheel 'setuptools<81'
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q --no-build-isolation basicsr==1.4.2
	$(BIN)/python -m pip install -q --no-build-isolation -e '.[test,export,app]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15 tests

demo: $(STAMP)
	$(BIN)/python -m iqp_plugin.demo $(ARGS)

# the web page on the demo's model (make demo first), or on ARGS="--config F ..."
app: $(STAMP)
	@test -n "$(ARGS)" -o -f demo_out/wrapper.yml || \
		{ echo 'make app: no demo_out/wrapper.yml: run make demo first, or give ARGS="--config F"'; exit 2; }
	$(BIN)/python -m iqp_plugin.cli.app $(or $(ARGS),--config demo_out/wrapper.yml)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
