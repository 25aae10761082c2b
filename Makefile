# The README's two commands: `make reproduce` and `make test`.
# Both create .venv when missing and install only when pyproject.toml / constraints.txt changed (stamp files).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
SCALE ?= quick
BACKEND ?= local
WORKERS ?= 2
ARGS ?=
PYTEST_ARGS ?=

.PHONY: reproduce test report clean-venv

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.stamp-main: pyproject.toml constraints.txt | $(VENV)/bin/python
	$(PIP) install -c constraints.txt -e ".[explain,generative,kernels,solvers,operators,vision]"
	touch $@

$(VENV)/.stamp-test: pyproject.toml constraints.txt | $(VENV)/bin/python
	$(PIP) install -c constraints.txt -e ".[test]"
	touch $@ $(VENV)/.stamp-main

# Runs every claim at quick scale and writes report/index.html + report/REPORT.md.
# Exit code 1 from gradlab means "some claim did not reproduce" (failed or inconclusive): the report says which, so
# make succeeds. Exit code 3 (a claim crashed or timed out, or the run failed) and 2 (bad input) fail make.
reproduce: $(VENV)/.stamp-main
	$(VENV)/bin/gradlab reproduce --scale $(SCALE) --backend $(BACKEND) --workers $(WORKERS) \
	    --store .gradlab/results.sqlite --out report $(ARGS); \
	rc=$$?; if [ $$rc -eq 1 ]; then echo "some claims did not reproduce: see report/REPORT.md"; exit 0; fi; exit $$rc

report: $(VENV)/.stamp-main
	$(VENV)/bin/gradlab report --store .gradlab/results.sqlite --out report

# pytest exit code 5 ("no tests collected") is not a failure.
test: $(VENV)/.stamp-test
	OMP_NUM_THREADS=1 $(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then exit 0; fi; exit $$rc

clean-venv:
	rm -rf $(VENV)
