# Every target works from a fresh clone: the venv is created and the project
# installed into it on first use (and again whenever pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TOPO ?= topologies/two_lans.yaml
# Debian tools the test suite runs (tshark reads our pcaps, ping and iperf3 run on
# nodes, traceroute too); keep in step with .ci/run. Without them their tests skip locally, and fail under CI=true.
DEB_TOOLS := tshark iputils-ping iperf3 traceroute curl wget openssl

.PHONY: test run bench venv clean deps

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# As root: the Debian tools the suite needs.
deps:
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(DEB_TOOLS)

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

# On a terminal: the netemu> CLI. Without one (CI, pipes): the demo script, then exit.
run: $(STAMP)
	@if [ -t 0 ]; then $(BIN)/python launcher.py up $(TOPO); \
	else $(BIN)/python launcher.py up $(TOPO) --script topologies/two_lans.demo; fi

bench: $(STAMP)
	$(BIN)/python -m bench all

clean:
	rm -rf $(VENV) bench/out .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
