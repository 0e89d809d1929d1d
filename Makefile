# milterd — the README's two commands are `make run` and `make test`; everything they need
# is installed from here, on a fresh machine, with nothing done by hand.

PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
CONFIG_DIR ?= /etc/milterd
# Debian packages the tests drive for real: Postfix (end-to-end), libmilter-dev (pymilter,
# Sendmail's own libmilter, is the reference our MTA-side codec is held against).
TEST_DEBS := postfix libmilter-dev miltertest

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

test-deps: $(VENV)/.test-installed

$(VENV)/.test-installed: $(VENV)/.installed
	@missing=""; for p in $(TEST_DEBS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "make test-deps: need root to apt-get install:$$missing" >&2; exit 1; fi; \
	  echo "installing Debian packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
	  apt-get update -q -o DPkg::Lock::Timeout=600 >/dev/null; \
	  apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 \
	    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold $$missing >/dev/null; \
	fi
	$(BIN)/pip install -q -e '.[test]'
	touch $@

test: test-deps
	$(BIN)/pytest $(PYTEST_ARGS)

# Unit and integration tests only: no Postfix, no root.
test-fast: test-deps
	$(BIN)/pytest -m "not postfix and not slow" $(PYTEST_ARGS)

# Throughput and CPU per message: the milter path (a daemon started here, driven over the
# protocol) and the in-process engine. BENCH_CORPUS=DIR to use real mail.
BENCH_CORPUS ?=
BENCH_CONCURRENCY ?= 32
bench: install
	$(BIN)/milterd bench --spawn --concurrency $(BENCH_CONCURRENCY) $(if $(BENCH_CORPUS),--corpus $(BENCH_CORPUS))
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
