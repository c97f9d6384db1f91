# GridTwin — the two commands a user needs are `make demo` and `make test`.
# Every target installs what it needs itself and is safe to run twice.

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
GRIDTWIN := $(VENV)/bin/gridtwin
SITE ?= site.toml
BOARD ?= esp32s3
PORT ?=
NODE ?=
PYTEST_ARGS ?=
# test processes in parallel (pytest-xdist); 2 suits the 2-core CI machine
JOBS ?= 2
# Debian packages the tests and the demo start for real.
APT_PACKAGES := mosquitto mosquitto-clients influxdb chromium

.PHONY: help setup test demo flash deploy repl bench clean

help:
	@echo "make demo    - the whole system on this machine with virtual nodes"
	@echo "make test    - the whole test suite (firmware under real MicroPython, real Mosquitto)"
	@echo "make setup   - install what the two above need (.venv, Python and Debian packages)"
	@echo "make flash BOARD=esp32s3 PORT=/dev/ttyACM0   make deploy NODE=pdu_a PORT=...   make repl PORT=..."
	@echo "make bench   - performance figures"

setup: $(VENV)/.setup-stamp

$(VENV)/.setup-stamp: pyproject.toml tools/setup-system.sh
	@echo "setup: Debian packages, $(VENV) with gridtwin and MicroPython (about a minute, once) ..."
	@bash tools/setup-system.sh $(APT_PACKAGES)
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@bash tools/check-micropython.sh $(VENV)
	@touch $@

test: setup
	@$(VENV)/bin/pytest -n $(JOBS) $(PYTEST_ARGS)

# The whole system on loopback: PKI, broker, daemon, twin and every node of site.toml as a
# virtual node running the real firmware; the scenario takes 3 minutes (DEMO_ARGS="--speed 5").
DEMO_ARGS ?=
demo: setup
	@$(GRIDTWIN) --site $(SITE) demo $(DEMO_ARGS)

flash: setup
	@test -n "$(PORT)" || { echo "make flash: say which port, e.g. make flash BOARD=$(BOARD) PORT=/dev/ttyACM0" >&2; exit 2; }
	@$(GRIDTWIN) --site $(SITE) flash --board $(BOARD) --port $(PORT)

deploy: setup
	@test -n "$(NODE)" -a -n "$(PORT)" || { echo "make deploy: say which node and port, e.g. make deploy NODE=pdu_a PORT=/dev/ttyACM0" >&2; exit 2; }
	@$(GRIDTWIN) --site $(SITE) deploy --node $(NODE) --port $(PORT) $(DEPLOY_ARGS)

repl: setup
	@test -n "$(PORT)" || { echo "make repl: say which port, e.g. make repl PORT=/dev/ttyACM0" >&2; exit 2; }
	@test -e "$(PORT)" || { echo "make repl: no serial port $(PORT): is the board plugged in?" >&2; exit 2; }
	@$(VENV)/bin/mpremote connect $(PORT) repl

# BENCH_ARGS="--only ingest" runs one section; tools/bench.py --help lists them.
bench: setup
	@$(PY) tools/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info host/*.egg-info
