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

.PHONY: reproduce test test-compat report docs clean-venv

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

$(VENV)/.stamp-docs: pyproject.toml constraints.txt | $(VENV)/bin/python
	$(PIP) install -c constraints.txt -e ".[docs]"
	touch $@

# The API reference and one page per paper, built offline into docs/_build/html; any warning fails the build.
docs: $(VENV)/.stamp-docs
	OMP_NUM_THREADS=1 MPLBACKEND=Agg $(PY) -m sphinx -b html -W --keep-going -n -q docs docs/_build/html
	@echo "open docs/_build/html/index.html"

# Not part of CI: reruns tests/generative on transformers >= 5 and the newest diffusers in a second venv
# (torch/torchvision pinned as in constraints.txt, the rest unpinned and upgraded).
COMPAT_VENV ?= .venv-compat
test-compat:
	test -x $(COMPAT_VENV)/bin/python || $(PYTHON) -m venv $(COMPAT_VENV)
	grep -E '^(torch|torchvision)==' constraints.txt > $(COMPAT_VENV)/constraints-torch.txt
	$(COMPAT_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(COMPAT_VENV)/bin/python -m pip install --upgrade -c $(COMPAT_VENV)/constraints-torch.txt -e . \
	    "transformers>=5" diffusers safetensors pytest pytest-timeout hypothesis pytorch-msssim scikit-image
	OMP_NUM_THREADS=1 $(COMPAT_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/generative $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
