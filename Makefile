# Each target does its own set-up: a fresh clone needs nothing but `make demo` / `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench bench-check lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m fleetbus.demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) -m pytest benchmarks -q --benchmark-only --benchmark-columns=median,ops
	$(PY) -m benchmarks.report
	$(PY) -m benchmarks.launch_time
	$(PY) -m benchmarks.sim_rtf
	$(PY) -m benchmarks.sim_rtf --processes
	$(PY) -m benchmarks.fleet_rtf
	$(PY) -m benchmarks.fusion_cpu
	$(PY) -m benchmarks.recording_throughput

bench-check: $(STAMP)
	$(PY) -m benchmarks.report --quick --check benchmarks/results/baseline.json

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .benchmarks
