# The README's commands. Each installs what it needs into .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test test-fast study ui lint install bench server server-stop

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# The project and its extras, by uv where it installs (one wheel from PyPI; a fresh install
# about 31 s against pip's 86 s, the same 165 packages: docs/results/), else by pip. uv reads
# no pip.conf, so the machine's pip settings (find-links, constraint) are passed on. uv's cache
# (~/.cache/uv, 8 GB, hard-linked into .venv on one filesystem) outlives .venv:
# `.venv/bin/uv cache clean` frees it. Neither byte-compiles (pip's --no-compile: compiling
# TensorFlow's and torch's modules was about 50 s; Python compiles what is imported, on use).
EXTRAS := .[dev,launchers,iterative,team]
# a global pip setting by name, from `pip config list` (`pip config get` reads only one file)
PIP_SETTING = f() { $(PY) -m pip config list 2>/dev/null | sed -n "s/^global\.$$1='\(.*\)'$$/\1/p"; }; f
$(STAMP): pyproject.toml | $(PY)
	@links="$${PIP_FIND_LINKS:-$$($(PIP_SETTING) find-links)}"; \
	constraint="$${PIP_CONSTRAINT:-$$($(PIP_SETTING) constraint)}"; \
	if $(PY) -m pip install --quiet uv >/dev/null 2>&1 && $(VENV)/bin/uv pip install --quiet \
		--python $(PY) $${links:+--find-links "$$links"} \
		$${constraint:+--constraint "$$constraint"} -e "$(EXTRAS)"; then \
		echo "installed with uv"; \
	else \
		$(PY) -m pip install --quiet --no-compile -e "$(EXTRAS)"; \
	fi
	touch $(STAMP)

install: $(STAMP)

## make test: ruff, the import contracts (pyproject.toml), then the whole test suite on two
## workers (CPU only); the 15 slowest tests are listed at the end
test: $(STAMP)
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -n 2 --dist worksteal --durations=15

## make test-fast: everything not marked slow (no sweeps, no subprocess runs; 1-3 min)
test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist worksteal -m "not slow"

## make study: the quickstart dose-response study (the PINN at g=1 and g=2, LSQML and LSQML-TV at 3 doses, seed 0: 12 jobs, about 8 min on 2 CPU cores, up to 3x that on a slow day)
study: $(STAMP)
	@start=$$(date +%s); \
	$(PY) run.py -m experiment=quickstart; status=$$?; \
	echo ""; echo "study wall time: $$(( $$(date +%s) - start )) s"; \
	report=$$(ls -td outputs/sweeps/*/*/report 2>/dev/null | head -n 1); \
	echo "results: MLflow store outputs/mlflow.db (experiment 'quickstart'); open it with: make ui"; \
	if [ -n "$$report" ]; then echo "report: $$report/report.html"; fi; \
	exit $$status

## make ui: the MLflow UI on http://127.0.0.1:5000 over the default store; first prints the link
## that opens the latest study's dose-response curves (grouped by arm, log dose axis)
ui: $(STAMP)
	@$(PY) -m ptycho.runner.ui sqlite:///$(CURDIR)/outputs/mlflow.db http://127.0.0.1:5000
	$(PY) -m mlflow ui --backend-store-uri sqlite:///$(CURDIR)/outputs/mlflow.db \
		--host 127.0.0.1 --port 5000

## make server: a team's tracking server (Debian's PostgreSQL under mlflow server, artifacts in
## outputs/server/artifacts); prints the MLFLOW_TRACKING_URI to use. make server-stop ends both.
server: $(STAMP)
	bash ops/team_server.sh start

server-stop:
	bash ops/team_server.sh stop

lint: $(STAMP)
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports --no-cache

bench: $(STAMP)
	$(PY) bench/throughput.py --quick
	$(PY) bench/sweep.py
