# Primus Lens WandB exporter: the two commands of the README.
#   make demo       install, start a Lens server, train a tiny model with wandb, keep serving (Ctrl-C stops)
#   make test       install, start the services the tests need (PostgreSQL), run every test, stop them
#   make test-real  the adapters against the real framework packages from PyPI (scripts/test-real.sh)
#
# Everything is installed into the project's own virtual environment, .venv/ (VENV=...), created
# with BASE_PYTHON; the system interpreter is never touched.  The package's start-up line (its
# .pth file) therefore mirrors wandb only for programs run with .venv/bin/python.
# As root on Debian/Ubuntu, the system packages (chromium, postgresql, python3-venv, nodejs/npm)
# are installed with apt-get; otherwise what is missing is listed and the tests that need it are
# skipped, each skip with its reason in the summary at the end of the run.
BASE_PYTHON ?= python3
VENV ?= .venv
PYTHON := $(CURDIR)/$(VENV)/bin/python
PIP := $(PYTHON) -m pip
PG_DIR ?= /tmp/primus-lens-test-pg-$(shell id -u)
PG_PORT ?= 55432
PYTEST_ARGS ?=
DEMO_ARGS ?=
REAL_ENVS ?= real-torch real-jax
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export TORCH_EXTENSIONS_DIR ?= $(HOME)/.cache/torch_extensions
APT := DEBIAN_FRONTEND=noninteractive apt-get
IS_ROOT := $(shell [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && echo yes)

.PHONY: install venv npm install-system demo test test-fast test-real postgres postgres-stop bench

install: $(VENV)/.installed

venv: $(PYTHON)

# python3 -m venv needs Debian's python3-venv (ensurepip); as root it is installed when missing.
$(PYTHON):
	@if ! $(BASE_PYTHON) -m venv $(VENV) >/dev/null 2>&1; then \
	  rm -rf $(VENV); \
	  if [ "$(IS_ROOT)" = yes ]; then \
	    echo "make: $(BASE_PYTHON) -m venv failed; installing python3-venv with apt-get"; \
	    $(APT) update -qq && $(APT) install -y -qq python3-venv >/dev/null && $(BASE_PYTHON) -m venv $(VENV); \
	  else echo "make: could not create $(VENV) with '$(BASE_PYTHON) -m venv'. On Debian/Ubuntu: sudo apt-get install python3-venv (or set BASE_PYTHON=python3.X)" >&2; exit 1; fi; \
	fi
	@echo "make: created the virtual environment $(CURDIR)/$(VENV)"

# torch is pinned and installed first: that exact version is a local CPU wheel on our machines
# (an unpinned torch pulls a multi-GB CUDA build).  The stamp is redone when pyproject.toml or
# the npm lock file changes.
$(VENV)/.installed: $(PYTHON) pyproject.toml package-lock.json
	@$(MAKE) --no-print-directory npm
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[server,dev,frameworks,gpu]"
	@touch $@
	@echo "make: installed into $(CURDIR)/$(VENV) (the system Python is untouched); to use it: source $(VENV)/bin/activate"

# `npm ci` installs the browser libraries the server serves (uPlot, Swagger UI; pinned in
# package-lock.json) into node_modules/.  Without npm, the package's build takes the same pinned
# tarballs from the npm registry instead (hatch_build.py), so npm is optional.
npm:
	@if ! command -v npm >/dev/null && [ "$(IS_ROOT)" = yes ]; then \
	  $(APT) update -qq && $(APT) install -y -qq nodejs npm >/dev/null; fi
	@if command -v npm >/dev/null; then npm ci --no-audit --no-fund --loglevel=error >/dev/null; \
	else echo "make: npm not found; the build takes the UI's pinned npm packages from the npm registry instead"; fi

# Chromium (browser tests) and PostgreSQL (the PostgreSQL half of the storage tests).
install-system:
	@if [ -x /usr/bin/chromium ] && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then exit 0; fi; \
	if [ "$(IS_ROOT)" = yes ]; then \
	  $(APT) update -qq && $(APT) install -y -qq chromium postgresql >/dev/null; \
	else \
	  [ -x /usr/bin/chromium ] || echo "make: MISSING chromium (sudo apt-get install chromium): the browser tests will be SKIPPED"; \
	  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || echo "make: MISSING postgresql (sudo apt-get install postgresql): the PostgreSQL tests will be SKIPPED"; \
	fi

demo: install
	primus-lens demo $(DEMO_ARGS)

# A PostgreSQL for your own use (stays up: make postgres-stop).  `make test` starts its own
# when PRIMUS_LENS_TEST_POSTGRES_DSN is not set, and stops it afterwards.
postgres:
	@bash scripts/start-postgres.sh $(PG_DIR) $(PG_PORT)

postgres-stop:
	@bash scripts/start-postgres.sh --stop $(PG_DIR)

test: install install-system
	@marker=$(PG_DIR).started-by-make; rm -f $$marker; dsn="$${PRIMUS_LENS_TEST_POSTGRES_DSN:-}"; \
	if [ -z "$$dsn" ]; then \
	  dsn=$$(PG_STARTED_FILE=$$marker bash scripts/start-postgres.sh $(PG_DIR) $(PG_PORT)) \
	    || { dsn=; echo "make test: PostgreSQL could not be started (see above): the PostgreSQL tests will be SKIPPED"; }; \
	fi; \
	PRIMUS_LENS_TEST_POSTGRES_DSN="$$dsn" $(PYTHON) -m pytest -n 2 --dist loadfile -ra $(PYTEST_ARGS); status=$$?; \
	if [ -f $$marker ]; then bash scripts/start-postgres.sh --stop $(PG_DIR); rm -f $$marker; \
	  echo "make test: stopped the PostgreSQL it started (and removed $(PG_DIR))"; fi; \
	exit $$status

test-fast: install
	$(PYTHON) -m pytest -n 2 --dist loadfile -ra -m "not slow and not browser" $(PYTEST_ARGS)

# The real framework packages (tests/integrations/real, docs/frameworks/verified.md): each stack's
# pins go into .real/<stack>/ in front of .venv (scripts/test-real.sh); torch is not reinstalled.
test-real: install
	@status=0; for stack in $(REAL_ENVS); do \
	  bash scripts/test-real.sh $(PYTHON) $$stack $(PYTEST_ARGS) || status=1; \
	done; exit $$status

bench: install
	$(PYTHON) benchmarks/bench_log_overhead.py
	$(PYTHON) benchmarks/bench_log_instructions.py
	$(PYTHON) benchmarks/bench_startup.py
	$(PYTHON) benchmarks/bench_delivery.py
	$(PYTHON) benchmarks/bench_server_ingest.py
	$(PYTHON) benchmarks/bench_server_query.py
	$(PYTHON) benchmarks/bench_ui_first_paint.py
