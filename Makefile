# milterd — the README's two commands are `make run` and `make test`; everything they need
# is installed from here, on a fresh machine, with nothing done by hand.

PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
CONFIG_DIR ?= /etc/milterd
# Debian packages the tests drive for real: Postfix (end-to-end), libmilter-dev (pymilter,
# Sendmail's own libmilter, is the reference our MTA-side codec is held against), rspamd
# (for its client, rspamc, run against our HTTP API; Rspamd itself must never start: see
# NO_SERVICE_START below).
TEST_DEBS := postfix libmilter-dev miltertest rspamd

# pyspf's RFC 7208 conformance suite (YAML) ships only in its source distribution: fetched
# from PyPI for the installed pyspf version into the venv, never copied into this repository;
# tests/conformance/spf/ serves its zones from the loopback DNS server.
SPF_SUITE := $(VENV)/cache/pyspf/rfc7208-tests.yml

.PHONY: install run test test-deps test-fast bench lint typecheck docs clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

# Starts the daemon on its embedded defaults: a missing $(CONFIG_DIR) means shipped defaults,
# and the data directory falls back to one this user can write.
run: install
	$(BIN)/milterd run --config-dir $(CONFIG_DIR) $(ARGS)

test-deps: $(VENV)/.test-installed $(SPF_SUITE)

$(VENV)/.test-installed: $(VENV)/.installed
	@missing=""; for p in $(TEST_DEBS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "make test-deps: need root to apt-get install:$$missing" >&2; exit 1; fi; \
	  echo "installing Debian packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
	  apt-get update -q -o DPkg::Lock::Timeout=600 >/dev/null; \
	  $(NO_SERVICE_START) \
	  apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 \
	    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold $$missing >/dev/null; \
	  status=$$?; rm -f $$added_policy; [ $$status = 0 ] || exit $$status; \
	  case " $$missing " in *" rspamd "*) $(RSPAMD_OFF);; esac; \
	fi
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# Package scripts start the services they install (rspamd would take 11332-11334): a
# policy-rc.d that says no (honoured by invoke-rc.d and deb-systemd-invoke) while apt runs,
# unless the machine already has one; afterwards rspamd is kept from starting at boot too.
NO_SERVICE_START = added_policy=""; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	  printf '\043!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && \
	  added_policy=/usr/sbin/policy-rc.d; fi;
RSPAMD_OFF = if [ -d /run/systemd/system ]; then systemctl disable --now rspamd >/dev/null 2>&1; \
	  else update-rc.d rspamd disable >/dev/null 2>&1; service rspamd stop >/dev/null 2>&1; fi; true

$(SPF_SUITE): $(VENV)/.test-installed
	@rm -rf $(VENV)/cache/pyspf && mkdir -p $(VENV)/cache/pyspf
	@version=$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("pyspf"))') && \
	$(BIN)/pip download -q --no-deps --no-binary :all: -d $(VENV)/cache/pyspf "pyspf==$$version" && \
	tar -xzf $(VENV)/cache/pyspf/pyspf-$$version.tar.gz -C $(VENV)/cache/pyspf --strip-components=2 \
	  pyspf-$$version/test/rfc7208-tests.yml pyspf-$$version/test/rfc7208-tests.LICENSE

test: test-deps
	$(BIN)/pytest $(PYTEST_ARGS)

# Unit and integration tests only: no Postfix, no root.
test-fast: test-deps
	$(BIN)/pytest -m "not postfix and not slow" $(PYTEST_ARGS)

# Throughput and CPU per message: the milter path (a daemon started here, driven over the
# protocol), the HTTP scan API (POST /checkv2, the same messages) and the in-process engine.
# BENCH_CORPUS=DIR to use real mail.
BENCH_CORPUS ?=
BENCH_CONCURRENCY ?= 32
# BENCH_WORKERS=N: the spawned daemon's scanning workers (default one per core).
BENCH_WORKERS ?=
BENCH_SPAWN = --spawn $(if $(BENCH_WORKERS),--workers $(BENCH_WORKERS))
bench: install
	$(BIN)/milterd bench $(BENCH_SPAWN) --concurrency $(BENCH_CONCURRENCY) $(if $(BENCH_CORPUS),--corpus $(BENCH_CORPUS))
	$(BIN)/milterd bench $(BENCH_SPAWN) --http --concurrency $(BENCH_CONCURRENCY) $(if $(BENCH_CORPUS),--corpus $(BENCH_CORPUS))
	$(BIN)/milterd bench --in-process $(if $(BENCH_CORPUS),--corpus $(BENCH_CORPUS))

lint: install
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/ruff check milterd engine tests
	$(BIN)/ruff format --check milterd engine tests

typecheck: install
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist

# Reference docs generated from the schemas and the symbol registry (a test checks them).
docs: install
	$(BIN)/python -m milterd.docgen docs
