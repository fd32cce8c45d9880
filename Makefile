# callcenter: `make run` starts the server, `make test` runs every test. Both set up what is missing
# first (a .venv, the Python dependencies, the Debian packages) and take seconds when nothing is.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMPS := .stamps

SERVER_DEBS := espeak-ng sox
TEST_DEBS := sip-tester baresip-core tshark postgresql chromium kamailio redis-server

# The pip stamp is named after pyproject.toml's content: editing the dependencies reinstalls them.
PIP_STAMP := $(STAMPS)/pip-$(shell cat pyproject.toml 2>/dev/null | sha256sum | cut -c1-16)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# $(call ensure_debs,pkg ...): apt-get install the packages dpkg-query does not report as installed;
# no apt-get at all (not even update) when every one is there.
define ensure_debs
	if ! command -v dpkg-query >/dev/null; then \
	  echo "not a Debian/Ubuntu system: make sure these are installed: $(1)"; exit 0; fi; \
	missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q ' installed$$' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi
endef

.PHONY: help setup run test test-peers lint bench clean

help:
	@echo "make run         set up what is missing, then start the server (ARGS='--sip-port 5070')"
	@echo "make test        set up (with the SIP test peers), then run the whole test suite"
	@echo "make setup       .venv + Python dependencies + Debian packages the server needs"
	@echo "make test-peers  Debian packages the tests need (SIPp, baresip, tshark, PostgreSQL, Kamailio, Redis)"
	@echo "make lint        ruff and mypy on callcenter/"
	@echo "make bench       run every benchmark in scripts/bench/"

setup: $(PIP_STAMP)
	@$(call ensure_debs,$(SERVER_DEBS))
	@# a self-signed certificate for SIP over TLS (sip.tls_cert/tls_key), made once, never downloaded
	@test -f data/tls/cert.pem || $(BIN)/callcenter tls selfsigned --out data/tls

test-peers:
	@$(call ensure_debs,$(TEST_DEBS))

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "callcenter needs Python >= 3.11; '$(PYTHON)' is: $$($(PYTHON) --version 2>&1)"; \
	  echo "(run 'make PYTHON=python3.11 ...' to choose another interpreter)"; exit 1; }
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { $(call ensure_debs,python3-venv); }
	$(PYTHON) -m venv $(VENV)

$(PIP_STAMP): $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	@mkdir -p $(STAMPS) && rm -f $(STAMPS)/pip-* && touch $@

run: setup
	$(BIN)/callcenter serve $(ARGS)

test: setup test-peers
	$(BIN)/pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check callcenter
	$(BIN)/mypy callcenter

# Each scripts/bench/*.py or *.sh is one benchmark printing its figures; files starting with _ are helpers.
bench: setup test-peers
	@found=0; for f in scripts/bench/*.py scripts/bench/*.sh; do \
	  [ -f "$$f" ] || continue; case "$$(basename $$f)" in _*) continue;; esac; found=1; \
	  echo "== $$f"; \
	  case "$$f" in *.py) $(BIN)/python "$$f" || exit $$?;; *.sh) bash "$$f" || exit $$?;; esac; \
	done; [ $$found = 1 ] || echo "no benchmarks in scripts/bench/ yet"

clean:
	rm -rf $(STAMPS) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
