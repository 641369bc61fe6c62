# `make run` and `make test` set up whatever is missing, then do their one job.
# Both are safe to repeat: the virtualenv is rebuilt only when pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test bench clean system-packages citrineos-peer axe-core

run: $(VENV)/.installed
	$(BIN)/fwrepo serve

# Three workers on two cores: most tests wait on real servers (fwrepo, RGW, PostgreSQL), not on the CPU;
# 1,281 tests took 9 min this way and over 15 alone. Each worker starts its own servers on free ports.
test: $(VENV)/.installed-test system-packages citrineos-peer axe-core
	$(BIN)/pytest -n 3

# Every benchmark in turn; one that misses a target (exit 1) does not stop the others, one that fails does.
BENCHMARKS := upload grants download ftps campaign soak
bench: $(VENV)/.installed-test system-packages
	@missed=0; for name in $(BENCHMARKS); do \
	  $(BIN)/python bench/$$name.py; status=$$?; \
	  if [ $$status = 1 ]; then missed=1; elif [ $$status != 0 ]; then exit $$status; fi; \
	done; exit $$missed

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "fwrepo needs Python 3.11 or newer"'
	@# Debian ships venv's pip bootstrap separately; install it when we may.
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { rm -rf $(VENV); \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y python3-venv || { apt-get update && apt-get install -y python3-venv; }; \
	  else echo "python3 -m venv failed: install python3-venv (sudo apt-get install python3-venv)"; exit 1; fi; \
	  $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

# Real peers of the test suite from Debian: Ceph's RADOS Gateway (the S3
# server), busybox (a charger's wget), curl, wget, openssl, systemd
# (systemd-analyze verify checks deploy/fwrepo.service), and chromium with
# chromium-driver (the web console's tests drive a real headless browser through
# Selenium, tests/support/browser.py) and libnss3-tools (its certutil puts a test
# server's CA into that browser's certificate store). Installed when we run as
# root and they are missing; otherwise their tests are skipped and say why.
# Several worktrees' `make test` on one machine contend for dpkg's lock, so
# apt-get waits for it (up to 10 min) instead of failing at once.
SYSTEM_PACKAGES := ceph-mon ceph-osd radosgw ceph-common busybox curl wget openssl systemd chromium chromium-driver libnss3-tools
APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=600
system-packages:
	@if { ! command -v radosgw || ! command -v busybox || ! command -v curl || ! command -v wget || ! command -v systemd-analyze \
	  || ! command -v chromium || ! command -v chromedriver || ! command -v certutil; } >/dev/null 2>&1 \
	  && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing $(SYSTEM_PACKAGES) for the tests"; \
	  $(APT_INSTALL) $(SYSTEM_PACKAGES) \
	  || { apt-get update -o DPkg::Lock::Timeout=600 && $(APT_INSTALL) $(SYSTEM_PACKAGES); } \
	  || echo "could not install $(SYSTEM_PACKAGES): tests that need them will be skipped"; \
	fi

# axe-core's axe.min.js, which tests/support/browser.py injects into console pages for the accessibility
# check, from the npm registry into a cache outside git (npm pack into a temporary directory, then only the
# one file is kept). Major version pinned: a new major may add rules that fail pages that passed. Without
# npm or the registry the target says so and the run goes on: the accessibility checks skip and say why.
AXE_MAJOR := 4
AXE_JS := .cache/axe-core/axe.min.js
axe-core:
	@if [ ! -s $(AXE_JS) ]; then \
	  if ! command -v npm >/dev/null 2>&1; then echo "npm not found: no $(AXE_JS), the accessibility checks will be skipped"; \
	  else tmp=$$(mktemp -d) && \
	    if (cd "$$tmp" && npm pack --loglevel=error axe-core@$(AXE_MAJOR) >/dev/null 2>npm.log && tar -xzf axe-core-*.tgz package/axe.min.js); then \
	      mkdir -p $(dir $(AXE_JS)) && cp "$$tmp/package/axe.min.js" $(AXE_JS).part && mv $(AXE_JS).part $(AXE_JS) \
	      && echo "axe-core $$(cd "$$tmp" && ls axe-core-*.tgz | sed 's/axe-core-\(.*\)\.tgz/\1/') in $(AXE_JS)"; \
	    else echo "could not fetch axe-core@$(AXE_MAJOR) with npm ($$(grep -m 1 -i error "$$tmp/npm.log" 2>/dev/null)): the accessibility checks will be skipped"; fi; \
	    rm -rf "$$tmp"; \
	  fi; \
	fi

# CitrineOS, the real CSMS the connector's tests run against, from the shared peer kit (the same places
# tests/support/citrineos.py looks). Its setup builds once per machine (about 75 s cold, under a second
# once cached) and is done here so the first test does not wait on it. A failed setup does not stop the
# run: those tests skip and say why.
CITRINEOS_KIT := $(firstword $(wildcard $(if $(FWREPO_CITRINEOS_KIT),$(FWREPO_CITRINEOS_KIT)/start,../shared/peers/citrineos/start /work/shared/peers/citrineos/start)))
citrineos-peer:
	@if [ -n "$(CITRINEOS_KIT)" ]; then \
	  "$(dir $(CITRINEOS_KIT))setup" >/dev/null || echo "CitrineOS setup failed: its tests will be skipped"; \
	fi

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
