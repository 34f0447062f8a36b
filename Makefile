# The two commands a newcomer runs: `make demo` and `make test`. Each creates what it needs.
PY ?= python3
VENV := .venv

.PHONY: demo test venv clean

venv:
	@test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	@$(VENV)/bin/python -m pip install -q --upgrade pip
	@$(VENV)/bin/python -m pip install -q -e '.[dev,demo]'
	@bash scripts/reinstall-otel-proto.sh $(VENV)/bin/python

demo: venv
	$(VENV)/bin/sofamesh demo

test:
	bash scripts/test

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
