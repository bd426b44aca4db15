# Two entry points from a fresh clone: `make demo` and `make test`.
# Both create (or reuse) the virtual environment in $(VENV) and install what they need.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
# Outside a machine that carries the CPU wheel locally, point pip at PyTorch's CPU index, e.g.
#   make test PIP_EXTRA="--extra-index-url https://download.pytorch.org/whl/cpu"
PIP_EXTRA ?=
STAMP := $(VENV)/.installed

.PHONY: demo test venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(PIP_EXTRA) "torch==2.13.0"
	$(PY) -m pip install --quiet $(PIP_EXTRA) -e ".[trainer,dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/stream-ecg demo

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
