# Primus Lens WandB exporter: the two commands of the README.
#   make demo   install, start a Lens server, train a tiny model with wandb, show what arrived
#   make test   install (incl. Chromium and PostgreSQL from Debian), start PostgreSQL, run every test
#   make test-real  the adapters against the real framework packages from PyPI (tox envs real-torch, real-jax)
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
PG_DIR ?= /tmp/primus-lens-test-pg
PG_PORT ?= 55432
PYTEST_ARGS ?=
export TORCH_EXTENSIONS_DIR ?= $(HOME)/.cache/torch_extensions

.PHONY: install npm install-system demo test test-fast test-real postgres bench lint

# torch is pinned and installed first: that exact version is a local CPU wheel on our machines
# (an unpinned torch pulls a multi-GB CUDA build).  `npm ci` installs the browser libraries the
# server serves (uPlot, Swagger UI; pinned in package-lock.json) into node_modules/, where it finds them;
# without npm, root on Debian gets `nodejs npm` from apt first (as install-system does for chromium).
install: npm
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[server,dev,frameworks,gpu]"

npm:
	@if ! command -v npm >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; \
	  else echo "make install: npm is missing; install Node.js and npm, then run make install again" >&2; exit 1; fi; \
	fi
	npm ci --no-audit --no-fund --loglevel=error >/dev/null

install-system:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  if ! [ -x /usr/bin/chromium ] || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium postgresql >/dev/null; \
	  fi; \
	else echo "install-system: not root or no apt-get; install chromium and postgresql yourself"; fi

demo: install
	primus-lens demo

postgres:
	@bash scripts/start-postgres.sh $(PG_DIR) $(PG_PORT) >/dev/null

test: install install-system postgres
	PRIMUS_LENS_TEST_POSTGRES_DSN=$${PRIMUS_LENS_TEST_POSTGRES_DSN:-postgresql://postgres@127.0.0.1:$(PG_PORT)/postgres} \
	  $(PYTHON) -m pytest -n 2 --dist loadfile -ra $(PYTEST_ARGS)

test-fast:
	$(PYTHON) -m pytest -n 2 --dist loadfile -ra -m "not slow and not browser" $(PYTEST_ARGS)

# The real framework packages (tests/integrations/real, docs/frameworks/verified.md): one tox env
# per stack, on top of the base env of `make install` (sitepackages: torch is not reinstalled).
# An env that cannot be created here (no PyPI, no wheel for this platform ...) is skipped with a
# clear line instead of failing the target; a test that fails does fail it.
REAL_ENVS ?= real-torch real-jax
test-real:
	@if ! $(PYTHON) -m tox --version >/dev/null 2>&1; then \
	  echo "test-real: SKIPPED: tox is not installed (pip install -e '.[dev]')"; exit 0; fi; \
	status=0; for env in $(REAL_ENVS); do \
	  if $(PYTHON) -m tox -e $$env --notest; then \
	    $(PYTHON) -m tox -e $$env -- $(PYTEST_ARGS) || status=1; \
	  else echo "test-real: SKIPPED $$env: its environment could not be created (see the tox output above)"; fi; \
	done; exit $$status

bench: install
	$(PYTHON) benchmarks/bench_log_overhead.py
	$(PYTHON) benchmarks/bench_log_instructions.py
	$(PYTHON) benchmarks/bench_startup.py
	$(PYTHON) benchmarks/bench_delivery.py
	$(PYTHON) benchmarks/bench_server_ingest.py
	$(PYTHON) benchmarks/bench_server_query.py
	$(PYTHON) benchmarks/bench_ui_first_paint.py
