# The two commands a user needs: `make demo` and `make test`. Everything installs itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-all demo clean-runs

install: $(STAMP)

# Re-runs only when the package metadata or the pins change: a second `make install` is a no-op.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

test-all: install   ## also the slow statistical / end-to-end tests
	$(PY) -m pytest -q -m ''

demo: install
	$(PY) -m experiments.demo

clean-runs:
	rm -rf results/runs results/wandb
